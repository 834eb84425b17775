"""Saved clone voices on disk: <state_dir>/voices/<name>/{ref.wav, meta.json}.

Recordings of people's voices are biometric data: directories are created 0700 and files
0600 whatever umask the daemon inherited (the activator and Docker have no ``UMask=``).

The reference audio is stored already cleaned (mono 24 kHz, trimmed, normalised), so the
clone prompt built from it is the same on every daemon start. Prompts themselves are
cached in memory by the engine (keyed by name + content hash).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import TTSError
from ..formats import MODEL_RATE

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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
        self.root = Path(state_dir) / "voices"

    def _dir(self, name: str) -> Path:
        if not isinstance(name, str) or not NAME.match(name) or ".." in name:
            raise TTSError("bad_request", "voice name must be 1-64 of letters, digits, '_', '-', '.'")
        return self.root / name

    def add(self, name: str, wav: np.ndarray, ref_text: str | None, meta: dict | None = None) -> dict:
        import soundfile as sf

        d = self._dir(name)
        tmp = d.with_name(f".{name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _private_dir(tmp)
        buf = io.BytesIO()
        sf.write(buf, wav, MODEL_RATE, format="WAV", subtype="PCM_16")
        _write_private(tmp / "ref.wav", buf.getvalue())
        info = dict(meta or {}, name=name, ref_text=ref_text or "", created=time.time(),
                    duration_s=round(len(wav) / MODEL_RATE, 3))
        _write_private(tmp / "meta.json", json.dumps(info, indent=2).encode())
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
        return info

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
        shutil.rmtree(d)
        return True

    def list(self) -> list[dict]:
        out = []
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                m = d / "meta.json"
                if m.is_file() and not d.name.startswith("."):
                    try:
                        out.append(json.loads(m.read_text()))
                    except ValueError:
                        continue
        return out
