"""``qwen3tts-ctl models``: pull from a stand-in Hugging Face Hub on loopback (the real
``huggingface_hub`` client, HF_ENDPOINT pointed at it) serving the tiny checkpoint in hub
layout; resume, hash verification, atomic visibility, list/remove/info, and the message
users get with no model installed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from qwen3ttsd import checkpoints
from qwen3ttsd.client import Client
from qwen3ttsd.daemon.models import ModelRegistry
from qwen3ttsd.errors import TTSError

from .helpers import PY, daemon_env, start_daemon, wait_for

REPO = "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice"
NAME = "Qwen3-TTS-12Hz-0.6B-CustomVoice"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
BIG = "model.safetensors"
# The real checkpoints' files span many of the client's 10 MB read chunks, so an interrupted
# download leaves a partial file; the tiny ones fit in one, so the pulls here read 64 KiB chunks.
PULL = ("import sys, huggingface_hub.constants as c; c.DOWNLOAD_CHUNK_SIZE = 65536; "
        "from qwen3ttsd.cli.ctl import main; sys.exit(main(sys.argv[1:]))")


class FakeHub(ThreadingHTTPServer):
    """What ``HfApi.model_info(files_metadata=True)`` and ``snapshot_download`` request: repo
    info with sizes and hashes, and ``resolve`` URLs (HEAD/GET, ETag, X-Repo-Commit, Range)."""

    daemon_threads = True

    def __init__(self, repo: str, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.repo = repo
        self.commit = COMMIT
        self.files = {p.relative_to(root).as_posix(): p.read_bytes()
                      for p in sorted(root.rglob("*")) if p.is_file()}
        self.log: list[tuple[str, str, str | None]] = []   # method, file, Range header
        self.corrupt: set[str] = set()
        self.cut_once: dict[str, int] = {}                 # file -> bytes sent before dropping
        self.hold: dict[str, threading.Event] = {}         # file -> sent half, waits for set()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @staticmethod
    def lfs(path: str, data: bytes) -> bool:
        return path.endswith(".safetensors") or len(data) > 1_000_000

    def sibling(self, path: str) -> dict:
        data = self.files[path]
        s = {"rfilename": path, "size": len(data),
             "blobId": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
        if self.lfs(path, data):
            s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return s

    def etag(self, path: str) -> str:
        s = self.sibling(path)
        return s["lfs"]["sha256"] if "lfs" in s else s["blobId"]

    def gets(self, path: str) -> list[str | None]:
        return [r for m, p, r in self.log if m == "GET" and p == path]

    def stop(self) -> None:
        for ev in self.hold.values():
            ev.set()
        self.shutdown()
        self.server_close()


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeHub

    def log_message(self, *args) -> None:
        pass

    def _json(self, obj: dict, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, head: bool) -> None:
        hub = self.server
        m = re.match(r"^/(.+?)/resolve/([^/]+)/(.+)$", self.path.split("?")[0])
        if not m or m[1] != hub.repo or m[3] not in hub.files:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, data = m[3], hub.files[m[3]]
        if path in hub.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        rng = self.headers.get("Range")
        hub.log.append(("HEAD" if head else "GET", path, rng))
        start = int(re.match(r"bytes=(\d+)-", rng)[1]) if rng else 0
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", hub.commit)
        self.send_header("ETag", f'"{hub.etag(path)}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        body = data[start:]
        if path in hub.cut_once:
            self.wfile.write(body[:hub.cut_once.pop(path)])
            self.wfile.flush()
            self.close_connection = True
            return
        if path in hub.hold:
            half = len(body) // 2
            self.wfile.write(body[:half])
            self.wfile.flush()
            hub.hold[path].wait(60)
            body = body[half:]
        try:
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def do_HEAD(self) -> None:
        self._file(head=True)

    def do_GET(self) -> None:
        m = re.match(r"^/api/models/([^/]+/[^/?]+)(?:/revision/([^/?]+))?", self.path)
        if m:
            if m[1] != self.server.repo:
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._json({"id": m[1], "modelId": m[1], "sha": self.server.commit, "private": False,
                        "siblings": [self.server.sibling(p) for p in self.server.files]})
            return
        self._file(head=False)


@pytest.fixture()
def hub(tiny_models):
    h = FakeHub(REPO, tiny_models["custom_voice"])
    yield h
    h.stop()


def _env(hub: FakeHub, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QWEN3TTSD_", "HF_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_XET="1", QWEN3TTSD_CONFIG="/nonexistent", PYTHONUNBUFFERED="1",
               QWEN3TTSD_RUNTIME_DIR=str(tmp_path / "rt"))
    env.update(extra)
    return env


def ctl(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-c", PULL, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _same_tree(a: Path, b: Path) -> bool:
    files = lambda root: {p.relative_to(root).as_posix(): p.read_bytes()  # noqa: E731
                          for p in root.rglob("*") if p.is_file() and p.name != checkpoints.SOURCE_FILE}
    return files(a) == files(b)


# --- pull -----------------------------------------------------------------------------------


def test_pull_by_short_name_verifies_and_shows_progress(hub, tiny_models, tmp_path):
    models = tmp_path / "models"
    r = ctl(_env(hub, tmp_path), "models", "pull", "0.6b-customvoice", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    target = models / NAME
    assert r.stdout.strip() == str(target)
    assert _same_tree(target, tiny_models["custom_voice"])
    bars = [line for line in r.stderr.splitlines() if re.match(r"^ *\d+% \[[#-]{25}\] ", line)]
    assert bars and bars[-1].startswith("100% [" + "#" * 25) and "20.8 MB / 20.8 MB" in bars[-1], r.stderr
    assert "verifying" in r.stderr and "success" in r.stderr
    src = json.loads((target / checkpoints.SOURCE_FILE).read_text())
    assert src["repo"] == REPO and src["revision"] == COMMIT and src["source"] == "huggingface"
    assert sorted(p.name for p in models.iterdir()) == [NAME]  # no staging, lock or .cache left
    assert not (target / ".cache").exists()

    # Again: answered from the hub's metadata, nothing downloaded; --if-missing asks nobody.
    n = len(hub.log)
    r = ctl(_env(hub, tmp_path), "models", "pull", REPO, "--models-dir", str(models))
    assert r.returncode == 0 and "up to date" in r.stderr and len(hub.log) == n
    hub.stop()
    r = ctl(_env(hub, tmp_path), "models", "pull", "0.6b-customvoice", "--if-missing", "--models-dir", str(models))
    assert r.returncode == 0 and r.stdout.strip() == str(target)


def test_update_fetches_only_what_changed(hub, tiny_models, tmp_path):
    models = tmp_path / "models"
    env = _env(hub, tmp_path)
    assert ctl(env, "models", "pull", "0.6b-customvoice", "--models-dir", str(models)).returncode == 0
    old_weights = (models / NAME / BIG).stat().st_ino
    hub.commit = "f" * 40  # a new revision: one small file changed
    hub.files["generation_config.json"] = b'{"max_new_tokens": 4096}'
    hub.log.clear()
    r = ctl(env, "models", "pull", "0.6b-customvoice", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert hub.gets("generation_config.json") and not hub.gets(BIG)  # the weights were not fetched again
    assert (models / NAME / "generation_config.json").read_bytes() == b'{"max_new_tokens": 4096}'
    assert (models / NAME / BIG).stat().st_ino == old_weights
    assert json.loads((models / NAME / checkpoints.SOURCE_FILE).read_text())["revision"] == "f" * 40
    assert sorted(p.name for p in models.iterdir()) == [NAME]


def test_pull_unknown_names_are_clear_errors(hub, tmp_path):
    r = ctl(_env(hub, tmp_path), "models", "pull", "2b-customvoice", "--models-dir", str(tmp_path / "m"))
    assert r.returncode == 1 and "1.7b-customvoice" in r.stderr and "Traceback" not in r.stderr
    r = ctl(_env(hub, tmp_path), "models", "pull", "Qwen/NoSuchRepo", "--models-dir", str(tmp_path / "m"))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "NoSuchRepo" in r.stderr


def test_offline_pull_fails_fast_and_clearly(tmp_path):
    """No network: one clear line at once - no retry loop, no urllib3 repr, no promise to
    resume what never started."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QWEN3TTSD_", "HF_"))}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf-home"),
               HF_HUB_DISABLE_TELEMETRY="1", QWEN3TTSD_CONFIG="/nonexistent")
    models = tmp_path / "models"
    t0 = time.monotonic()
    r = ctl(env, "models", "pull", "0.6b-base", "--models-dir", str(models))
    assert r.returncode == 1 and time.monotonic() - t0 < 15, r.stderr
    err = r.stderr.lower()
    assert "cannot reach" in err and "connection refused" in err and f"127.0.0.1:{port}" in err, r.stderr
    for raw in ("traceback", "httpconnectionpool", "maxretryerror", "newconnectionerror", "resum", "request id"):
        assert raw not in err, r.stderr
    assert not models.exists() or list(models.iterdir()) == []


def test_cut_connection_resumes_with_a_range_request(hub, tiny_models, tmp_path):
    cut = len(hub.files[BIG]) // 3
    hub.cut_once[BIG] = cut
    r = ctl(_env(hub, tmp_path), "models", "pull", "0.6b-customvoice", "--models-dir", str(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    ranges = [g for g in hub.gets(BIG) if g]
    assert ranges and 0 < int(ranges[0][6:-1]) <= cut
    assert _same_tree(tmp_path / "m" / NAME, tiny_models["custom_voice"])


def test_half_pulled_model_is_invisible_and_a_killed_pull_resumes(hub, tiny_models, tmp_path):
    models = tmp_path / "models"
    env = _env(hub, tmp_path)
    hub.hold[BIG] = threading.Event()
    p = subprocess.Popen([PY, "-c", PULL, "models", "pull", "0.6b-customvoice", "--models-dir", str(models)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        staging = models / f".pull-{NAME}"

        def partial() -> int:
            return sum(f.stat().st_size for f in staging.rglob("*.incomplete")) if staging.exists() else 0

        wait_for(lambda: partial() > 0 or p.poll() is not None, 60, what="partial download")
        assert p.poll() is None
        # Mid-download: neither the daemon's registry nor `models list` sees the model.
        assert ModelRegistry(models_dir=str(models)).entries == {}
        r = ctl(env, "models", "list", "--models-dir", str(models))
        assert NAME not in r.stdout and "no model installed" in r.stderr and "partial pull" in r.stderr
        os.kill(p.pid, signal.SIGKILL)  # the worst interruption: no cleanup at all
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
        hub.hold.pop(BIG).set()
    done = partial()
    r = ctl(env, "models", "pull", "0.6b-customvoice", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert hub.gets(BIG)[-1] == f"bytes={done}-"  # continued, not restarted
    assert _same_tree(models / NAME, tiny_models["custom_voice"])
    assert list(ModelRegistry(models_dir=str(models)).entries) == [NAME]


def test_hash_mismatch_is_refused_and_the_file_fetched_again(hub, tiny_models, tmp_path):
    models = tmp_path / "models"
    hub.corrupt.add(BIG)
    r = ctl(_env(hub, tmp_path), "models", "pull", "0.6b-customvoice", "--models-dir", str(models))
    assert r.returncode == 1
    assert "failed verification" in r.stderr and "model.safetensors: sha256" in r.stderr
    assert not (models / NAME).exists() and ModelRegistry(models_dir=str(models)).entries == {}
    hub.corrupt.clear()
    n = len(hub.gets("config.json"))
    r = ctl(_env(hub, tmp_path), "models", "pull", "0.6b-customvoice", "--models-dir", str(models))
    assert r.returncode == 0, r.stderr
    assert len(hub.gets("config.json")) == n  # only the bad file came again
    assert _same_tree(models / NAME, tiny_models["custom_voice"])


def test_modelscope_source(tiny_models, tmp_path):
    """``--source modelscope`` through the ModelScope client's public calls (a stand-in module
    here: the real client talks to modelscope.cn only); a bad hash is refused the same way."""
    stub = tmp_path / "stub" / "modelscope"
    (stub / "hub").mkdir(parents=True)
    src = tiny_models["custom_voice"]
    (stub / "__init__.py").write_text(f"""
import os, shutil
SRC = {str(src)!r}
def snapshot_download(model_id, revision=None, local_dir=None, **kw):
    assert (model_id, revision) == ("Qwen/Qwen3-TTS-12Hz-1.7B-Base", "master"), (model_id, revision)
    for root, _, files in os.walk(SRC):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), SRC)
            os.makedirs(os.path.dirname(os.path.join(local_dir, rel)), exist_ok=True)
            shutil.copy(os.path.join(root, f), os.path.join(local_dir, rel))
    return local_dir
""")
    (stub / "hub" / "__init__.py").write_text("")
    files = [{"Path": p.relative_to(src).as_posix(), "Size": p.stat().st_size, "Type": "blob",
              "Sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "Revision": "ms-rev-1"}
             for p in src.rglob("*") if p.is_file()]
    (stub / "hub" / "api.py").write_text(f"""
import json
class HubApi:
    def get_model_files(self, model_id, revision=None, recursive=False):
        assert revision == "master" and recursive
        return json.loads({json.dumps(json.dumps(files))})
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3TTSD_")}
    env.update(PYTHONPATH=f"{tmp_path / 'stub'}:{os.environ.get('PYTHONPATH', '')}", QWEN3TTSD_CONFIG="/nonexistent")
    models = tmp_path / "models"
    r = subprocess.run([PY, "-m", "qwen3ttsd.cli", "models", "pull", "1.7b-base", "--source", "modelscope",
                        "--models-dir", str(models)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    target = models / "Qwen3-TTS-12Hz-1.7B-Base"
    assert _same_tree(target, src)
    assert json.loads((target / checkpoints.SOURCE_FILE).read_text())["revision"] == "ms-rev-1"  # the commit listed


def test_modelscope_without_its_client_says_how_to_install_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3TTSD_")}
    r = subprocess.run([PY, "-c", "import sys; sys.modules['modelscope'] = None; from qwen3ttsd.cli.ctl import main; "
                        "sys.exit(main(sys.argv[1:]))", "models", "pull", "1.7b-base", "--source", "modelscope",
                        "--models-dir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "pip install" in r.stderr and "modelscope" in r.stderr


# --- list / info / remove -------------------------------------------------------------------


def _installed(tiny_models, models: Path) -> Path:
    shutil.copytree(tiny_models["custom_voice"], models / "tiny-custom_voice")
    shutil.copytree(tiny_models["base"], models / "tiny-base")
    (models / ".pull-Half").mkdir()
    (models / ".pull-Half" / "config.json").write_text("{}")
    return models


def test_list_and_info_are_local(tiny_models, tmp_path):
    models = _installed(tiny_models, tmp_path / "models")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3TTSD_")}
    env.update(QWEN3TTSD_CONFIG="/nonexistent", QWEN3TTSD_MODELS_DIR=str(models),
               QWEN3TTSD_RUNTIME_DIR=str(tmp_path / "rt"))
    r = subprocess.run([PY, "-m", "qwen3ttsd.cli", "models", "list"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "TYPE", "SIZE", "DISK"] and len(lines) == 3
    row = next(line for line in lines if line.startswith("tiny-custom_voice")).split()
    assert row[1:3] == ["custom_voice", "0.6B"] and "9" in row and "noise" in row
    assert "partial pull: .pull-Half" in r.stderr
    rows = json.loads(subprocess.run([PY, "-m", "qwen3ttsd.cli", "models", "list", "--json"], env=env,
                                     capture_output=True, text=True).stdout)
    cv = next(x for x in rows if x["name"] == "tiny-custom_voice")
    assert cv["loaded"] is False and "ryan" in cv["speakers"] and "english" in cv["languages"]
    assert cv["random_weights"] is True and cv["disk_bytes"] > 10_000_000
    r = subprocess.run([PY, "-m", "qwen3ttsd.cli", "models", "info", "tiny-base"], env=env,
                       capture_output=True, text=True)
    info = json.loads(r.stdout)
    assert info["type"] == "base" and info["speakers"] == [] and info["path"] == str(models / "tiny-base")
    r = subprocess.run([PY, "-m", "qwen3ttsd.cli", "models", "info", "nope"], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "tiny-base" in r.stderr


def test_info_verify_detects_a_changed_file(hub, tmp_path):
    models = tmp_path / "models"
    env = _env(hub, tmp_path)
    assert ctl(env, "models", "pull", "0.6b-customvoice", "--models-dir", str(models)).returncode == 0
    r = ctl(env, "models", "info", "0.6b-customvoice", "--verify", "--models-dir", str(models))
    assert r.returncode == 0 and json.loads(r.stdout)["verified"] == "ok"
    with open(models / NAME / "generation_config.json", "a") as f:
        f.write(" ")
    r = ctl(env, "models", "info", NAME, "--verify", "--models-dir", str(models))
    assert r.returncode == 1 and "generation_config.json" in json.loads(r.stdout)["verified"][0]


@pytest.mark.slow
def test_remove_is_refused_while_loaded(tiny_models, tmp_path):
    models = _installed(tiny_models, tmp_path / "models")
    rt = tmp_path / "rt"
    env = daemon_env("", tmp_path / "state", idle_timeout=120, models_dir=models)
    env.pop("QWEN3TTSD_MODEL")
    d = start_daemon(rt, env)
    ctl_env = dict(env, QWEN3TTSD_RUNTIME_DIR=str(rt))
    try:
        with Client(str(rt / "admin.sock"), timeout=300) as c:
            c.call("admin.load", {"model": "tiny-base"})
        rows = json.loads(ctl(ctl_env, "models", "list", "--json").stdout)
        assert {x["name"]: x["loaded"] for x in rows} == {"tiny-base": True, "tiny-custom_voice": False}
        r = ctl(ctl_env, "models", "remove", "tiny-base")
        assert r.returncode != 0 and "is loaded" in r.stderr and (models / "tiny-base").is_dir()
        r = ctl(ctl_env, "models", "remove", "tiny-custom_voice")
        assert r.returncode == 0, r.stderr
        assert not (models / "tiny-custom_voice").exists()
        with Client(str(rt / "admin.sock")) as c:
            c.call("admin.unload", {"model": "tiny-base"})
        assert ctl(ctl_env, "models", "remove", "tiny-base").returncode == 0
        assert sorted(p.name for p in models.iterdir()) == [".pull-Half"]
    finally:
        d.terminate()
        d.wait(60)


def _light_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3TTSD_")}
    env.update(QWEN3TTSD_CONFIG="/nonexistent", QWEN3TTSD_RUNTIME_DIR=str(tmp_path / "rt"))
    return env


def test_remove_of_a_symlinked_checkpoint_removes_the_link_only(tmp_path):
    elsewhere = tmp_path / "disk2" / "big-model"
    elsewhere.mkdir(parents=True)
    (elsewhere / "config.json").write_text('{"tts_model_type": "base"}')
    models = tmp_path / "models"
    models.mkdir()
    (models / "big-model").symlink_to(elsewhere, target_is_directory=True)
    r = subprocess.run([PY, "-m", "qwen3ttsd.cli", "models", "remove", "big-model", "--models-dir", str(models)],
                       env=_light_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert str(elsewhere) in r.stderr and "kept" in r.stderr
    assert list(models.iterdir()) == []  # the link is gone, nothing half-renamed left behind
    assert (elsewhere / "config.json").is_file()  # what it pointed at is untouched


@pytest.mark.parametrize("cmd", [["list"], ["info", "x"], ["remove", "x"], ["pull", "0.6b-base"]])
def test_a_file_as_models_dir_is_a_one_line_error(tmp_path, cmd):
    afile = tmp_path / "afile"
    afile.write_text("")
    for models_dir in (afile, afile / "sub"):
        r = subprocess.run([PY, "-m", "qwen3ttsd.cli", "models", *cmd, "--models-dir", str(models_dir)],
                           env=_light_env(tmp_path), capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1] == f"error: models_dir {models_dir} is not a directory"


# --- no model installed ---------------------------------------------------------------------


def test_registry_without_models_says_how_to_pull(tmp_path):
    (tmp_path / ".pull-Qwen3-TTS-12Hz-1.7B-Base").mkdir()
    reg = ModelRegistry(models_dir=str(tmp_path))
    with pytest.raises(TTSError) as e:
        reg.pick(None)
    assert e.value.code == "unavailable" and not e.value.retryable
    assert e.value.message == "no model installed: run `qwen3tts-ctl models pull 1.7b-customvoice`"
    assert e.value.http_status == 503


@pytest.mark.slow
def test_bridge_with_an_empty_models_dir(hub, tmp_path):
    """503 JSON with the pull command, /health says so, `models list` does not wake the
    daemon, and a pulled (random-weight) model is reported on /health."""
    from .test_bridge import Bridge

    models = tmp_path / "models"
    models.mkdir()
    b = Bridge(tmp_path, models)
    try:
        assert b.health()["warnings"] == [checkpoints.NO_MODEL_MESSAGE]
        env = _env(hub, tmp_path, QWEN3TTSD_RUNTIME_DIR=str(b.rt))
        r = ctl(env, "models", "list", "--models-dir", str(models))
        assert r.returncode == 0 and b.health()["daemon"]["spawns"] == 0  # never woken to answer
        r = httpx.post(b.url + "/v1/audio/speech", json={"input": "Hello.", "voice": "ryan"}, timeout=120)
        assert r.status_code == 503 and "retry-after" not in r.headers
        assert r.json()["error"]["message"] == "no model installed: run `qwen3tts-ctl models pull 1.7b-customvoice`"
        assert ctl(env, "models", "pull", "0.6b-customvoice", "--models-dir", str(models)).returncode == 0
        (w,) = b.health()["warnings"]
        assert w.startswith(f"{NAME}: random weights: audio is noise")
    finally:
        b.stop()
