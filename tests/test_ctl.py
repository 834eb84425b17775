"""``qwen3tts-ctl``: argument mistakes are one-line errors found before anything is
synthesized or woken; ``say`` writes the format its file name says; ``status`` never starts
an idle daemon unless asked to."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

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


# --- say: the file's extension is the format (issue 20 item 8) -----------------------------


@pytest.mark.parametrize("output, fmt, want", [
    (None, None, "wav"), ("a.mp3", None, "mp3"), ("A.MP3", None, "mp3"), ("a.ogg", None, "opus"),
    ("a.pcm", None, "pcm16"), ("out", None, "wav"), ("a.mp3", "mp3", "mp3"), ("a.xyz", "pcm16", "pcm16"),
    (None, "flac", "flac"), ("dir.d/out", None, "wav"),
])
def test_output_format_follows_the_extension(output, fmt, want):
    from qwen3ttsd.cli.ctl import output_format

    assert output_format(output, fmt) == want


@pytest.mark.parametrize("output, fmt, msg", [
    ("a.mp3", "wav", "a.mp3 is mp3 but --format asks for wav"),
    ("a.xyz", None, "cannot tell the audio format from '.xyz'"),
    ("a.mp3", "nope", "unknown audio format 'nope'"),
])
def test_output_format_refuses_a_mismatch(output, fmt, msg):
    from qwen3ttsd.cli.common import UsageError
    from qwen3ttsd.cli.ctl import output_format

    with pytest.raises(UsageError, match=re.escape(msg)):
        output_format(output, fmt)


def test_say_mismatch_is_refused_before_synthesis(tmp_path):
    out = tmp_path / "a.mp3"
    r = ctl(tmp_path, "say", "Hello.", "-o", str(out), "--format", "wav")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--format" in r.stderr, r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_say_encodes_by_the_extension(custom_voice_daemon, tmp_path):
    for name, fmt in (("a.mp3", "MP3"), ("a.flac", "FLAC"), ("a.wav", "WAV")):
        out = tmp_path / name
        r = subprocess.run([PY, "-m", "qwen3ttsd.cli", "--runtime-dir", str(custom_voice_daemon), "say", "Hello there.",
                            "-o", str(out), "--voice", "ryan", "--max-frames", "4"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        info = sf.info(str(out))
        assert info.format == fmt and info.samplerate == 24000, (name, info)
        assert abs(info.duration - 4 * 0.08) < 0.1, (name, info.duration)


# --- status: never wakes an idle daemon unless --wake ----------------------------------------


def test_status_does_not_start_an_idle_daemon_behind_the_bridge(tmp_path):
    from .test_bridge import Bridge

    models = tmp_path / "models"
    models.mkdir()
    b = Bridge(tmp_path, models)
    try:
        r = ctl(tmp_path, "status")
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["running"] is False and "not running" in st["daemon"]
        assert b.health()["daemon"]["spawns"] == 0
        r = ctl(tmp_path, "status", "--wake")
        assert r.returncode == 0, r.stderr
        assert "models" in json.loads(r.stdout)  # the daemon's own admin.status
        assert b.health()["daemon"]["spawns"] == 1
    finally:
        b.stop()


def test_voice_add_without_consent_asks_or_refuses(tmp_path):
    """No --consent and nobody at a terminal to ask: refused before the daemon is woken."""
    ref = tmp_path / "ref.wav"
    ref.write_bytes(b"RIFF")
    r = ctl(tmp_path, "voice-add", "me", str(ref))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--consent" in r.stderr, r.stderr


def test_voice_add_reads_consent_from_a_prompt(monkeypatch, tmp_path):
    from qwen3ttsd.cli import ctl as ctl_mod

    sent = {}

    class FakeClient:
        def __init__(self, path):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def call(self, method, params):
            sent.update(params, method=method)
            return {"name": params["name"]}

    ref = tmp_path / "ref.wav"
    ref.write_bytes(b"RIFF")
    monkeypatch.setattr(ctl_mod, "Client", FakeClient)
    monkeypatch.setattr(ctl_mod.sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "she agreed on 2026-12-05")
    assert ctl_mod.main(["--runtime-dir", str(tmp_path), "voice-add", "me", str(ref), "--replace"]) == 0
    assert sent["method"] == "voices.add" and sent["consent"] == "she agreed on 2026-12-05"
    assert sent["replace"] is True


@pytest.mark.slow
def test_say_writes_an_mp3_file_with_its_exact_length(custom_voice_daemon, tmp_path):
    """A file is complete: the stream's start is replaced with LAME's final Info frame (the
    daemon's ``final_header``), so decoders trim the encoder delay and the end padding."""
    out = tmp_path / "a.mp3"
    r = subprocess.run([PY, "-m", "qwen3ttsd.cli", "--runtime-dir", str(custom_voice_daemon), "say", "Hello there.",
                        "-o", str(out), "--voice", "ryan", "--max-frames", "7", "--subtitles", str(tmp_path / "a.srt")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    y, sr = sf.read(str(out), dtype="float32")
    assert sr == 24000 and len(y) == 7 * 1920  # libsndfile: exact (was 7 * 1920 + 1105 + padding)
    ff = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-f", "s16le", "pipe:1"],
                        capture_output=True, check=True)
    assert len(ff.stdout) == 2 * 7 * 1920
