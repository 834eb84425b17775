"""``qwen3tts-ctl models pull``: fetch a checkpoint, verify every file, then make it visible.

Files are downloaded into ``<models_dir>/.pull-<name>``, a hidden directory the daemon's
registry and ``models list`` skip, by the hub's own client: it draws the progress bars and
resumes partial files, also in a later run (the staging name is stable). Then every file is
checked against the hub's metadata (size, and the sha256 of LFS files or the git blob id of
the small ones) and only a complete, verified tree is renamed to ``<models_dir>/<name>``.
The daemon never downloads (its unit has no network): pulling is this admin command's job.

The hub clients are imported here, lazily, so ``qwen3tts-ctl`` starts light.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import importlib
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from .. import checkpoints

STAGING_PREFIX = ".pull-"
ATTEMPTS = 5                 # a dropped connection resumes this many times before giving up
SOURCES = ("huggingface", "modelscope")
T = TypeVar("T")


class PullError(Exception):
    pass


@dataclass
class RemoteFile:
    path: str
    size: int
    sha256: str | None = None    # LFS files (and every file on ModelScope)
    git_sha1: str | None = None  # small files on the Hugging Face Hub: the git blob id


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# --- hashes ---------------------------------------------------------------------------------


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for chunk in _chunks(path):
        h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    for chunk in _chunks(path):
        h.update(chunk)
    return h.hexdigest()


def verify(root: Path, files: list[RemoteFile]) -> list[str]:
    """Problems with the files under ``root`` (empty when every file is present and matches)."""
    problems = []
    for rf in files:
        p = root / rf.path
        if not p.is_file():
            problems.append(f"{rf.path}: missing")
        elif p.stat().st_size != rf.size:
            problems.append(f"{rf.path}: size {p.stat().st_size}, expected {rf.size}")
        elif rf.sha256 and (got := file_sha256(p)) != rf.sha256:
            problems.append(f"{rf.path}: sha256 {got}, expected {rf.sha256}")
        elif not rf.sha256 and rf.git_sha1 and (got := git_blob_sha1(p)) != rf.git_sha1:
            problems.append(f"{rf.path}: git blob {got}, expected {rf.git_sha1}")
    return problems


# --- progress -------------------------------------------------------------------------------


class Progress(threading.Thread):
    """One bar for the whole checkpoint, from the bytes on disk in the staging directory, so it
    is the same for every source and includes what an earlier run already fetched. A terminal
    gets a redrawn line; a log gets a line every 10%."""

    def __init__(self, staging: Path, total: int, out=None) -> None:
        super().__init__(daemon=True)
        self.staging, self.total, self.out = staging, max(1, total), out or sys.stderr
        self.tty = self.out.isatty()
        self.done = threading.Event()
        self.t0, self.start_bytes, self.step = time.monotonic(), self.on_disk(), -1

    def on_disk(self) -> int:
        n = 0
        for p in self.staging.rglob("*"):
            try:
                n += p.stat().st_size if p.is_file() else 0
            except OSError:  # renamed while we looked
                pass
        return min(n, self.total)

    def line(self, have: int) -> str:
        pct = 100 * have // self.total
        rate = (have - self.start_bytes) / max(1e-3, time.monotonic() - self.t0)
        bar = "#" * (pct // 4) + "-" * (25 - pct // 4)
        return f"{pct:3d}% [{bar}] {human_bytes(have)} / {human_bytes(self.total)}  {human_bytes(rate)}/s"

    def draw(self, have: int) -> None:
        if self.tty:
            self.out.write("\r" + self.line(have) + "\033[K")
        elif (step := 10 * have // self.total) != self.step:
            self.step = step
            self.out.write(self.line(have) + "\n")
        self.out.flush()

    def run(self) -> None:
        while not self.done.wait(0.25 if self.tty else 1.0):
            self.draw(self.on_disk())

    def finish(self, complete: bool) -> None:
        self.done.set()
        self.join()
        self.draw(self.total if complete else self.on_disk())
        if self.tty:
            self.out.write("\n")


# --- sources --------------------------------------------------------------------------------


def _client(module: str, missing: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PullError(missing) from None


class HuggingFace:
    name = "huggingface"
    default_revision = "main"
    reuses_files = True  # see _seed
    hint = "; a host that reaches ModelScope instead: --source modelscope"  # when the Hub is unreachable

    def __init__(self) -> None:
        # Pulling is an explicit request to go online, even where the daemon's
        # HF_HUB_OFFLINE=1 leaked into this shell (the Docker image sets it). One
        # progress bar (ours, for the whole checkpoint) instead of eight per-file ones.
        os.environ["HF_HUB_OFFLINE"] = "0"
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        self.hub = _client("huggingface_hub", "pulling needs the Hugging Face Hub client: "
                           "pip install 'qwen3ttsd[daemon]' (or pip install huggingface_hub)")

    def listing(self, repo: str, revision: str) -> tuple[str, list[RemoteFile]]:
        info = self.hub.HfApi().model_info(repo, revision=revision, files_metadata=True)
        files = [RemoteFile(s.rfilename, s.lfs.size if s.lfs else (s.size or 0),
                            sha256=s.lfs.sha256 if s.lfs else None, git_sha1=s.blob_id)
                 for s in info.siblings or []]
        return info.sha, files

    def download(self, repo: str, commit: str, staging: Path) -> None:
        self.hub.snapshot_download(repo, revision=commit, local_dir=staging)

    @property
    def where(self) -> str:
        return f"the Hugging Face Hub ({self.hub.constants.ENDPOINT})"

    def unreachable(self, e: Exception) -> bool:
        import requests

        return isinstance(e, requests.ConnectionError)

    def transient(self, e: Exception) -> bool:
        import requests
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        if isinstance(e, HfHubHTTPError) and e.response is not None:
            return e.response.status_code >= 500 or e.response.status_code == 429
        return isinstance(e, (requests.RequestException, LocalEntryNotFoundError)) or (
            isinstance(e, OSError) and "Consistency check failed" in str(e))

    @staticmethod
    def cleanup(staging: Path) -> None:
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # the client's resume metadata


class ModelScope:
    name = "modelscope"
    default_revision = "master"
    reuses_files = False  # whether it writes existing files in place is not known

    def __init__(self) -> None:
        self.ms = _client("modelscope", "--source modelscope needs the ModelScope client: "
                          "pip install 'qwen3ttsd[modelscope]' (or pip install modelscope)")

    def listing(self, repo: str, revision: str) -> tuple[str, list[RemoteFile]]:
        from modelscope.hub.api import HubApi

        self.branch = revision  # downloads ask for it by name; verification catches a moved branch
        entries = HubApi().get_model_files(repo, revision=revision, recursive=True)
        files = [RemoteFile(e["Path"], int(e["Size"]), sha256=e.get("Sha256") or None)
                 for e in entries if e.get("Type", "blob") == "blob"]
        commits = {e.get("Revision") for e in entries} - {None, ""}
        return (commits.pop() if len(commits) == 1 else revision), files

    def download(self, repo: str, commit: str, staging: Path) -> None:
        self.ms.snapshot_download(repo, revision=self.branch, local_dir=str(staging))

    where = "ModelScope (modelscope.cn)"
    hint = ""

    def unreachable(self, e: Exception) -> bool:
        import requests

        return isinstance(e, requests.ConnectionError)

    def transient(self, e: Exception) -> bool:
        import requests

        return isinstance(e, requests.RequestException)

    @staticmethod
    def cleanup(staging: Path) -> None:
        for hidden in (".msc", ".mv", ".mdl", ".cache"):
            p = staging / hidden
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()


def _source(name: str):
    if name not in SOURCES:
        raise PullError(f"unknown source {name!r}; one of {SOURCES}")
    return HuggingFace() if name == "huggingface" else ModelScope()


# --- pull -----------------------------------------------------------------------------------


def partial_pulls(models_dir: Path) -> list[Path]:
    """Staging directories of interrupted pulls (the next pull resumes them)."""
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.glob(f"{STAGING_PREFIX}*")
                  if p.is_dir() and not p.name.endswith((".old", ".removing")))


def read_source(checkpoint: Path) -> dict:
    """Where a pulled checkpoint came from (empty for hand-placed ones)."""
    return checkpoints.read_json(checkpoint / checkpoints.SOURCE_FILE)


def _locked(path: Path):
    f = open(path, "a")  # noqa: SIM115 - the lock lives as long as the file stays open
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise PullError(f"another pull into {path.parent} is running ({path.name})") from None
    return f


def _causes(e: BaseException) -> Iterator[BaseException]:
    """``e`` and what it wraps: causes, contexts, urllib3's ``reason`` and exception args."""
    seen, todo = set(), [e]
    while todo:
        x = todo.pop(0)
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        todo += [c for c in (x.__cause__, x.__context__, getattr(x, "reason", None), *x.args)
                 if isinstance(c, BaseException)]


def reason(e: BaseException) -> str:
    """One short line for a network error, not the client's nested reprs and request ids."""
    for x in _causes(e):
        if isinstance(x, socket.gaierror) or "Name or service not known" in str(x) \
                or "Temporary failure in name resolution" in str(x):
            return "the host name does not resolve (no DNS: offline?)"
        if isinstance(x, ConnectionRefusedError) or "Connection refused" in str(x):
            return "connection refused"
        if isinstance(x, (TimeoutError, socket.timeout)) or "timed out" in str(x).lower():
            return "the connection timed out"
        if "Network is unreachable" in str(x) or isinstance(x, OSError) and x.errno == errno.ENETUNREACH:
            return "the network is unreachable"
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    return re.sub(r"\s*\(Request ID: [^)]*\)", "", first)


def _retrying(what: str, src, fn: Callable[[], T], attempts: int, *, started: bool) -> T:
    """``fn()``, again after transient network errors (a download resumes where it stopped).

    Before anything was fetched (``started`` false), a server that cannot be reached at all
    is the host being offline, or a proxy or firewall: one clear error at once, no retries."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:  # the client's own exception types, classified by the source
            if not started and src.unreachable(e):
                raise PullError(f"cannot reach {src.where}: {reason(e)}. Check the network connection "
                                f"and proxy settings (HTTPS_PROXY){src.hint}") from e
            if not src.transient(e) or attempt == attempts:
                raise PullError(f"{what} failed: {reason(e)}" + (
                    "\n(run the same command again: it resumes where it stopped)"
                    if started and src.transient(e) else "")) from e
            wait = min(30, 2 ** attempt)
            _say(f"connection lost ({reason(e)}); resuming in {wait} s (attempt {attempt + 1}/{attempts})")
            time.sleep(wait)
    raise AssertionError("unreachable")


def _check_space(models_dir: Path, staging: Path, files: list[RemoteFile]) -> None:
    have = sum((staging / f.path).stat().st_size for f in files if (staging / f.path).is_file())
    need = sum(f.size for f in files) - have
    free = shutil.disk_usage(models_dir).free
    if need > free:
        raise PullError(f"not enough disk space in {models_dir}: need {human_bytes(need)}, "
                        f"{human_bytes(free)} free")


def _seed(staging: Path, target: Path, files: list[RemoteFile]) -> None:
    """Updating an installed model: hard-link its files into the staging directory, so the
    client re-downloads only what changed (it hashes an LFS file it finds before fetching it,
    and replaces files by rename, never in place, so the installed copy is never written)."""
    for rf in files:
        have, dst = target / rf.path, staging / rf.path
        if have.is_file() and not dst.exists() and have.stat().st_size == rf.size:
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(have, dst)
            except OSError:
                return  # no hard links here: download everything


def _match_owner(path: Path, like: Path) -> None:
    """root pulling into the service's models_dir: hand the files to the directory's owner."""
    st = like.stat()
    if os.geteuid() != 0 or (st.st_uid, st.st_gid) == (0, 0):
        return
    for p in [path, *path.rglob("*")]:
        os.lchown(p, st.st_uid, st.st_gid)


def _install(staging: Path, target: Path) -> None:
    """Make the verified tree visible in one rename (an older copy is swapped out first)."""
    old = target.with_name(f"{STAGING_PREFIX}{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def pull(name: str, models_dir: str | Path, *, source: str = "huggingface", revision: str | None = None,
         if_missing: bool = False, attempts: int = ATTEMPTS,
         say: Callable[[str], None] = _say) -> Path:
    """Download ``name`` into ``models_dir`` and return the checkpoint directory."""
    try:
        repo = checkpoints.resolve(name)
    except checkpoints.UnknownModel as e:
        raise PullError(str(e)) from None
    root = Path(models_dir)
    target = root / checkpoints.dir_name(repo)
    if if_missing and checkpoints.is_checkpoint(target):
        say(f"{target.name} is installed ({target})")
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PullError(f"cannot create models_dir {root}: {e.strerror or e}") from None
    staging = root / f"{STAGING_PREFIX}{target.name}"
    lock = _locked(root / f"{STAGING_PREFIX}{target.name}.lock")
    try:
        src = _source(source)
        revision = revision or src.default_revision
        say(f"pulling {repo} from {src.name} ...")
        commit, files = _retrying(f"{repo}@{revision}", src, lambda: src.listing(repo, revision), attempts,
                                  started=False)
        if not files:
            raise PullError(f"{repo}@{revision} has no files")
        have = read_source(target)
        if checkpoints.is_checkpoint(target) and have.get("repo") == repo and have.get("revision") == commit:
            say(f"{target.name} is up to date ({commit[:12]})")
            return target
        total = sum(f.size for f in files)
        say(f"{repo}@{commit[:12]}: {len(files)} files, {human_bytes(total)} -> {target}")
        staging.mkdir(exist_ok=True)
        _check_space(root, staging, files)
        if src.reuses_files:
            _seed(staging, target, files)
        progress, complete = Progress(staging, total), False
        progress.start()
        try:
            _retrying("download", src, lambda: src.download(repo, commit, staging), attempts, started=True)
            complete = True
        finally:
            progress.finish(complete)
        say(f"verifying {len(files)} files against the {src.name} hashes ...")
        problems = verify(staging, files)
        if problems:
            for rf in files:  # a rerun downloads the bad files again
                if any(p.startswith(rf.path + ":") for p in problems):
                    (staging / rf.path).unlink(missing_ok=True)
            raise PullError(f"{repo}: {len(problems)} file(s) failed verification, refused:\n  "
                            + "\n  ".join(problems) + "\n(they were deleted; run the pull again)")
        src.cleanup(staging)
        record = {"repo": repo, "source": src.name, "revision": commit,
                  "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "files": [asdict(f) for f in files]}
        (staging / checkpoints.SOURCE_FILE).write_text(json.dumps(record, indent=1))
        _match_owner(staging, root)
        _install(staging, target)
        say(f"success: {target.name} ({human_bytes(total)}, every file verified)")
        return target
    finally:
        lock.close()
        Path(lock.name).unlink(missing_ok=True)
