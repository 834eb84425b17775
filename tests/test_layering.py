"""Layering: what the always-on and admin processes may import, and docs that name every module.

The bridge (~30 MB budget), ``qwen3tts-ctl`` and the client library must start without
torch, numpy or soundfile, and the CLI and bridge talk to the daemon only over its sockets
(never ``qwen3ttsd.daemon`` / ``qwen3ttsd.engine``). One interpreter imports the package's
stdlib basics once, then forks a child per module, so each module is imported into a
clean ``sys.modules`` for ~1 ms instead of a fresh interpreter each.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "qwen3ttsd"
HEAVY = ("torch", "numpy", "soundfile", "soxr", "qwen_tts", "transformers")
FORBIDDEN_PACKAGES = ("qwen3ttsd.daemon", "qwen3ttsd.engine")
# Light at the package root; every module of these packages is light too.
LIGHT_ROOT = ("protocol", "messages", "client", "errors", "config", "formats", "checkpoints", "sockets", "voice_index",
              "activator", "probe", "integrations", "integrations.phone")
FRAMEWORKS = ("pipecat", "livekit")  # the integrations' extras: imported by their own module only
LIGHT_PACKAGES = ("bridge", "cli", "text")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def light_modules() -> list[str]:
    mods = [f"qwen3ttsd.{m}" for m in LIGHT_ROOT]
    for pkg in LIGHT_PACKAGES:
        mods += sorted(_module_name(p) for p in (PKG / pkg).rglob("*.py") if p.name != "__main__.py")
    return mods


# Imports each module named on stdin in a forked child; prints {module: [heavy or forbidden]}.
PROBE = r"""
import json, os, sys
heavy, forbidden = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for mod in sys.stdin.read().split():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            __import__(mod)
            bad = [m for m in heavy if m in sys.modules]
            bad += [m for m in sys.modules if m.startswith(tuple(forbidden))]
            msg = json.dumps(sorted(set(bad)))
        except BaseException as e:
            msg = json.dumps([f"import failed: {e!r}"])
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out[mod] = json.loads(f.read())
    os.waitpid(pid, 0)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def imported() -> dict[str, list[str]]:
    forbidden = [p + "." for p in FORBIDDEN_PACKAGES] + list(FORBIDDEN_PACKAGES)
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), json.dumps(forbidden)],
                       input=" ".join(light_modules()), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    result: dict[str, list[str]] = json.loads(r.stdout)
    return result


@pytest.mark.parametrize("module", light_modules())
def test_light_module_imports_no_heavy_stack_nor_the_daemon(imported, module):
    assert imported[module] == [], f"importing {module} pulls in {imported[module]}"


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, at the top or inside functions, as absolute names."""
    pkg = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


@pytest.mark.parametrize("package", ["cli", "bridge"])
def test_cli_and_bridge_never_import_the_daemon_or_engine_even_lazily(package):
    offenders = {str(p.relative_to(ROOT)): bad for p in sorted((PKG / package).rglob("*.py"))
                 if (bad := [n for n in _imports(p) if n.startswith(FORBIDDEN_PACKAGES)])}
    assert offenders == {}


def test_only_the_integrations_import_the_voice_agent_frameworks():
    """pipecat/livekit come with the ``[pipecat]``/``[livekit]`` extras: the bridge, the daemon
    and the CLI never import them, and each integration imports only its own framework."""
    offenders = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = str(p.relative_to(PKG))
        allowed = {f"integrations/{f}.py": f for f in FRAMEWORKS}.get(rel)
        bad = [n for n in _imports(p) if n.split(".")[0] in FRAMEWORKS and n.split(".")[0] != allowed]
        if bad:
            offenders[rel] = bad
    assert offenders == {}


def test_ctl_models_stays_light():
    """Running a command (not only importing) keeps the hub client and torch out too."""
    code = ("import sys; from qwen3ttsd.cli.ctl import main; main(['models', 'list', '--models-dir', '/nonexistent']); "
            "bad = [m for m in ('huggingface_hub', 'torch', 'numpy', 'requests') if m in sys.modules]; "
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_architecture_names_every_module():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    table = doc[doc.index("## Modules"):doc.index("## Decisions")]
    named = set(re.findall(r"`(qwen3ttsd/[\w/]+\.py)`", table))
    modules = {str(p.relative_to(ROOT)) for p in PKG.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    assert sorted(modules - named) == [], "docs/architecture.md's module table misses these"
    assert sorted(named - modules) == [], "docs/architecture.md's module table names modules that do not exist"
