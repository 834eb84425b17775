"""Saved clone voices on disk: <state_dir>/voices/<name>/{ref.wav, meta.json}.

Recordings of people's voices are biometric data: directories are created 0700 and files
0600 whatever umask the daemon inherited (the activator and Docker have no ``UMask=``).

The reference audio is stored already cleaned (mono 24 kHz, trimmed, normalised), so the
clone prompt built from it is the same on every daemon start. Prompts themselves are
cached in memory by the engine (keyed by name + content hash), and with the own weights kept
in the voice's directory too (``prompt-*.safetensors``, :mod:`qwen3ttsd.engine.voice_cache`),
so a start after an idle exit does not register the voice again.

A voice is written into a private temp folder and renamed into place: a save that fails
(a full disk, a file-size limit) leaves nothing behind and is ``storage_full``, which a
client should not retry as it is; temp folders a crash left are swept at start. A name
that is taken is ``conflict`` unless the caller asks to replace it. After every change the
voice index (:mod:`qwen3ttsd.voice_index`) is rewritten for the bridge.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import TTSError
from ..formats import MODEL_RATE
from ..voice_index import IndexEntry, write_index

log = logging.getLogger("qwen3ttsd.voices")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STORAGE_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})   # a write the disk refused
TMP_PREFIX = "."                  # temp folders are hidden: voice names start with a letter or digit


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _private_dir(path: Path) -> None:
    """mkdir -p with every directory we create (and ``path`` itself) mode 0700."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        os.chmod(p, PRIVATE_DIR)  # mkdir's mode is masked by the umask
    os.chmod(path, PRIVATE_DIR)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE)
        f.write(data)


class VoiceStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.root = self.state_dir / "voices"
        self._sweep()
        self._reindex()

    def _dir(self, name: str) -> Path:
        if not isinstance(name, str) or not NAME.match(name) or ".." in name:
            raise TTSError("bad_request", "voice name must be 1-64 of letters, digits, '_', '-', '.'")
        return self.root / name

    def add(self, name: str, wav: np.ndarray, ref_text: str | None, meta: dict | None = None,
            replace: bool = False) -> dict:
        """Save a voice; ``conflict`` if ``name`` exists (unless ``replace``), ``storage_full``
        when the disk refuses the write - either way nothing of it stays on disk."""
        import soundfile as sf

        d = self._dir(name)
        if d.exists() and not replace:
            raise _taken(name)
        buf = io.BytesIO()
        sf.write(buf, wav, MODEL_RATE, format="WAV", subtype="PCM_16")
        info = dict(meta or {}, name=name, ref_text=ref_text or "", created=time.time(),
                    duration_s=round(len(wav) / MODEL_RATE, 3))
        _private_dir(self.root)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}.", dir=self.root))
        try:
            os.chmod(tmp, PRIVATE_DIR)
            _write_private(tmp / "ref.wav", buf.getvalue())
            _write_private(tmp / "meta.json", json.dumps(info, indent=2).encode())
            self._commit(tmp, d, replace)
        except OSError as e:
            if e.errno in STORAGE_FULL:
                raise TTSError("storage_full", f"voice {name!r} was not saved: {os.strerror(e.errno or 0)} "
                               "in the daemon's state directory; free space there, then add it again") from None
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; a failed save's leftovers
        self._reindex()
        return info

    def _commit(self, tmp: Path, d: Path, replace: bool) -> None:
        """Move a written voice into place (a rename: readers see the old or the new one)."""
        old = None
        if replace and d.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{d.name}.old.", dir=self.root))
            os.rename(d, old / "v")
        try:
            os.rename(tmp, d)  # fails on a non-empty d: one saved at the same time wins
        except OSError as e:
            if old is not None:
                os.rename(old / "v", d)
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise _taken(d.name) from None
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)

    def directory(self, name: str) -> Path:
        """A saved voice's directory (what is kept there besides the recording goes with it)."""
        return self._dir(name)

    def get(self, name: str) -> tuple[np.ndarray, dict]:
        import soundfile as sf

        d = self._dir(name)
        if not (d / "meta.json").is_file():
            raise TTSError("not_found", f"voice {name!r} does not exist")
        meta = json.loads((d / "meta.json").read_text())
        wav, _ = sf.read(d / "ref.wav", dtype="float32")
        return wav, meta

    def exists(self, name: str) -> bool:
        try:
            return (self._dir(name) / "meta.json").is_file()
        except TTSError:
            return False

    def remove(self, name: str) -> bool:
        d = self._dir(name)
        if not d.exists():
            return False
        # renamed away first (atomic): a registration being kept into it meanwhile
        # (engine/voice_cache.py) then finds it gone, never makes the delete fail half-way
        gone = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "deleting-", dir=self.root))
        os.replace(d, gone / name)
        shutil.rmtree(gone, ignore_errors=True)   # (what is left is swept at the next start)
        self._reindex()
        return True

    def list(self) -> list[dict]:
        out = []
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                m = d / "meta.json"
                if m.is_file() and not d.name.startswith(TMP_PREFIX):
                    try:
                        out.append(json.loads(m.read_text()))
                    except ValueError:
                        continue
        return out

    def _sweep(self) -> None:
        """Remove temp folders a crashed or killed save left (only this daemon writes here)."""
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.name.startswith(TMP_PREFIX) and d.is_dir():
                    shutil.rmtree(d, ignore_errors=True)

    def _reindex(self) -> None:
        """Rewrite the bridge's voice index; a failure only leaves it stale (logged)."""
        if not self.state_dir.is_dir():
            return
        entries = [IndexEntry(id=v["name"], name=str(v.get("display_name") or v["name"]),
                              model=str(v.get("model") or ""), created=float(v.get("created") or 0.0))
                   for v in self.list() if isinstance(v.get("name"), str)]
        try:
            write_index(self.state_dir, entries)
        except OSError as e:
            log.warning("could not write the voice index in %s: %s", self.state_dir, e)


def _taken(name: str) -> TTSError:
    return TTSError("conflict", f"voice {name!r} already exists: remove it first, or add it with replace",
                    data={"param": "name"})
