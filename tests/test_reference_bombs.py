"""Reference uploads whose decoded size dwarfs the file: memory stays bounded by the output.

A 189 KB FLAC of 8 channels x 192 kHz x 120 s of zeros decodes to ~740 MB of float32; the
daemon must neither hold that nor its mono copy. Each bomb is processed in a fresh
interpreter so ``ru_maxrss`` measures that one upload.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from qwen3ttsd.audio import reference as R
from qwen3ttsd.audio.reference import ReferenceAudioError, process_reference

FFMPEG = shutil.which("ffmpeg")
SR = 24000
RSS_BOUND_MB = 100  # issue 21's target: any single upload <= idle RSS + 100 MB

_MEASURE = r"""
import json, resource, sys, io
import numpy as np, soundfile as sf
from qwen3ttsd.audio.reference import process_reference, ReferenceAudioError
warm = io.BytesIO()
t = np.arange(48000 * 2) / 48000
sf.write(warm, np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, 1), 48000, format="FLAC")
process_reference(warm.getvalue())          # libraries loaded, caches warm: this is "idle"
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    out = process_reference(data)
    res = {"seconds": len(out) / 24000}
except ReferenceAudioError as e:
    res = {"error": str(e)}
res["growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(res))
"""


def _measure(path: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _MEASURE, path], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _write_blocks(path, rate: int, channels: int, seconds: float, fmt: str, subtype: str,
                  signal: bool = False) -> None:
    """Write a long file block by block (the test must not hold the bomb either)."""
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, format=fmt, subtype=subtype) as f:
        block = rate // 2
        for i in range(int(seconds * 2)):
            x = np.zeros((block, channels), np.int16)
            if signal and i % 2 == 0:  # 0.5 s tone bursts: "speech" the cleanup keeps
                t = np.arange(block) / rate
                x[:] = (8000 * np.sin(2 * np.pi * 220 * t))[:, None].astype(np.int16)
            f.write(x)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bombs")
    flac = str(d / "zeros.flac")
    _write_blocks(flac, 192_000, 8, 120, "FLAC", "PCM_16")
    loud = str(d / "loud.flac")
    _write_blocks(loud, 192_000, 8, 120, "FLAC", "PCM_16", signal=True)
    return {"flac": flac, "loud": loud}


def test_flac_bomb_is_small_on_disk_and_bounded_in_memory(bombs):
    assert os.path.getsize(bombs["flac"]) < 2_000_000   # the bomb: tiny file, ~740 MB decoded
    res = _measure(bombs["flac"])
    assert "silent" in res.get("error", ""), res
    assert res["growth_mb"] < RSS_BOUND_MB, res


def test_loud_8ch_192k_upload_is_decoded_within_the_bound(bombs):
    res = _measure(bombs["loud"])
    assert res.get("seconds", 0) > 5, res           # a real (if odd) upload still works
    assert res["growth_mb"] < RSS_BOUND_MB, res


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed")
def test_ffmpeg_path_bomb_is_bounded(tmp_path):
    src = tmp_path / "z.wav"
    _write_blocks(str(src), 96_000, 8, 130, "WAV", "PCM_16")
    mka = tmp_path / "z.mka"  # matroska/FLAC: libsndfile can't read it, so ffmpeg decodes it
    subprocess.run([FFMPEG, "-v", "error", "-i", str(src), "-c:a", "flac", str(mka)], check=True)
    res = _measure(str(mka))
    assert "silent" in res.get("error", ""), res
    assert res["growth_mb"] < RSS_BOUND_MB, res


def _wav_header(rate: int, channels: int, frames: int) -> bytes:
    block = 2 * channels
    data = frames * block
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16) +
            b"data" + struct.pack("<I", data))


@pytest.mark.parametrize("rate, channels, why", [
    (48_000, 64, "channels"),
    (48_000, 1000, "channels"),
    (2_000_000, 1, "sample rate"),
    (100, 1, "sample rate"),
])
def test_absurd_headers_are_refused_clearly(rate, channels, why):
    frames = 2000
    data = _wav_header(rate, channels, frames) + bytes(frames * 2 * channels)
    with pytest.raises(ReferenceAudioError) as ei:
        process_reference(data)
    assert why in str(ei.value)


def _tone(seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.7 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.concatenate([np.zeros(sr // 2, np.float32), x, np.zeros(sr // 3, np.float32)])


def _whole_file_reference(data: bytes) -> np.ndarray:
    """What process_reference returned before decoding went block-wise (the whole file in memory)."""
    import soxr

    with sf.SoundFile(io.BytesIO(data)) as f:
        sr = f.samplerate
        wav = f.read(frames=int(R.MAX_DECODE_SECONDS * sr), dtype="float32", always_2d=True)
    mono = wav.mean(axis=1).astype(np.float32)
    if sr != R.TARGET_RATE:
        mono = soxr.resample(mono, sr, R.TARGET_RATE, quality="HQ").astype(np.float32)
    return R._clean(mono, R.MAX_SECONDS)


@pytest.mark.parametrize("sr, ch, fmt, seconds", [
    (44100, 2, "FLAC", 4), (48000, 2, "WAV", 3), (24000, 1, "WAV", 3), (16000, 1, "MP3", 3),
    (22050, 6, "WAV", 20), (48000, 1, "OGG", 3),
])
def test_valid_uploads_are_bit_identical_to_whole_file_decoding(sr, ch, fmt, seconds):
    x = _tone(seconds, sr)
    buf = io.BytesIO()
    sf.write(buf, np.stack([x * (0.5 + 0.1 * c) for c in range(ch)], axis=1), sr, format=fmt)
    got = process_reference(buf.getvalue())
    want = _whole_file_reference(buf.getvalue())
    assert got.dtype == np.float32 and np.array_equal(got, want)
