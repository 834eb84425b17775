"""``qwen3tts-ctl`` commands without a daemon: argument mistakes are one-line errors, found
before anything is synthesized or woken."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .helpers import PY


def ctl(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWEN3TTSD_")}
    env.update(QWEN3TTSD_CONFIG="/nonexistent")
    return subprocess.run([PY, "-m", "qwen3ttsd.cli", "--runtime-dir", str(tmp_path / "rt"), *args],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("flag, name", [("--subtitles", "a.srt"), ("-o", "a.wav")])
def test_say_into_a_missing_directory_is_refused_before_synthesis(tmp_path, flag, name):
    path = tmp_path / "no" / "such" / name
    r = ctl(tmp_path, "say", "Hello.", flag, str(path))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == f"error: {flag}: directory {path.parent} does not exist"
