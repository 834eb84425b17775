"""Download into ``.device-kit/`` what a bare GPU machine needs to run the package and its
tests offline: every distribution ``qwen3ttsd[daemon,test]`` needs, at the versions this
venv runs, except what the machine's own CUDA build of torch provides (torch, torchaudio,
triton, the nvidia-* libraries) and the test tools a GPU check does not use (playwright,
ruff, mypy). The project itself runs from the
working tree (``bench/device_check.sh`` puts it on PYTHONPATH). Wheels for ``--python`` (the device's: 3.12,
x86_64 manylinux); a project with no wheel is built into one here.

    python bench/device_kit.py            # make device-kit
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"^(torch|torchaudio|torchvision|triton|nvidia-.*|cuda-.*|playwright|ruff|mypy|pyee|greenlet)$")
# On the GPU machines' image already (/work/.library/device/KINDS.md, "Python packages already
# there"), at versions that serve: left out so the kit fits one 64 MiB carry. Not in this set:
# what we pin (transformers, tokenizers, huggingface_hub) and what the image lacks. gradio*:
# only qwen-tts's demo imports it.
PRESENT = set("""accelerate anyio attrs certifi charset-normalizer click einops filelock fsspec h11 hf-xet
httpcore httpx hypothesis idna iniconfig jinja2 joblib llvmlite markdown-it-py markupsafe mdurl numba numpy
onnxruntime packaging pandas pillow pluggy protobuf psutil pygments pytest python-dateutil pytz pyyaml regex
requests rich safetensors scikit-learn scipy six sortedcontainers threadpoolctl tqdm typing-extensions tzdata
urllib3 gradio gradio-client hf-gradio""".split())
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed(root: str = "qwen3ttsd", extras: tuple[str, ...] = ("daemon", "test")) -> dict[str, str]:
    """Installed distributions ``root[extras]`` needs, transitively: name -> version."""
    out: dict[str, str] = {}
    todo = [(root, set(extras))]
    while todo:
        name, want = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for req in dist.requires or []:
            dep, _, marker = req.partition(";")
            dep_name = _norm(re.split(r"[\s\[<>=!~(]", dep.strip(), maxsplit=1)[0])
            if "extra ==" in marker:
                extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)", marker)
                if not extra or extra.group(1) not in want:
                    continue
            elif marker.strip() and not _marker_true(marker):
                continue
            if SKIP.match(dep_name) or dep_name in out:
                continue
            try:
                out[dep_name] = metadata.version(dep_name)
            except metadata.PackageNotFoundError:
                continue
            sub = re.search(r"\[([^\]]+)\]", dep)
            todo.append((dep_name, set(sub.group(1).split(",")) if sub else set()))
    return out


def _marker_true(marker: str) -> bool:
    from packaging.markers import Marker

    return Marker(marker.replace("extra", "'_'") if "extra" in marker else marker).evaluate(
        {"python_version": PYTHON, "platform_system": "Linux", "sys_platform": "linux"})


PYTHON = "3.12"


def download(pkgs: dict[str, str], dest: Path, python: str) -> list[str]:
    """Fetch each ``name==version``; the names nothing could be fetched for."""
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest)]
    binary = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    binary += [x for p in PLATFORMS for x in ("--platform", p)]
    failed = []
    for name, version in sorted(pkgs.items()):
        spec = f"{name}=={version}"
        if subprocess.run(pip + binary + [spec], capture_output=True).returncode == 0:
            continue
        # no wheel published (pure-Python sdists: docopt, sox): built into one here, so the
        # machine installs wheels only (it may lack a build backend)
        wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), spec]
        if subprocess.run(wheel, capture_output=True).returncode != 0:
            failed.append(spec)
    return failed


def main() -> int:
    global PYTHON
    ap = argparse.ArgumentParser()
    ap.add_argument("--dest", default=str(ROOT / ".device-kit"))
    ap.add_argument("--python", default="3.12", help="the device's Python (KINDS.md: 3.12.3)")
    ap.add_argument("--all", action="store_true", help="also what the GPU image already has")
    a = ap.parse_args()
    PYTHON = a.python
    dest = Path(a.dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        metadata.distribution("qwen3ttsd")
    except metadata.PackageNotFoundError:
        print("qwen3ttsd is not installed in this Python: make install first", file=sys.stderr)
        return 2
    pkgs = {k: v for k, v in needed().items() if a.all or k not in PRESENT}
    for f in dest.iterdir():  # a kit made before: drop what is no longer wanted
        if _norm(re.split(r"-\d", f.name, maxsplit=1)[0]) not in pkgs:
            f.unlink()
    print(f"{len(pkgs)} distributions for python {a.python}: " + " ".join(f"{k}=={v}" for k, v in sorted(pkgs.items())))
    failed = download(pkgs, dest, a.python)
    size = sum(f.stat().st_size for f in dest.iterdir()) / 2**20
    print(f"{len(list(dest.iterdir()))} files, {size:.0f} MiB in {dest}")
    if failed:
        print("could not fetch: " + " ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
