"""The one formats table: what the README and the protocol document say agrees with it
(that it stays numpy-free: tests/test_layering.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qwen3ttsd import formats as F

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()


def _range(lo: float, hi: float) -> str:
    return f"{lo}-{hi}"


def test_readme_sample_rates_and_speed_agree_with_the_table():
    lo, hi = F.RATE_RANGE
    assert README.count(f"`sample_rate`: {_range(lo, hi)}") == 1           # WebSocket calls
    assert f"any of {_range(lo, hi)}" in README                             # HTTP
    assert f"`sample_rate`: {F.MODEL_RATE} (the model's)" in README
    assert f"{F.MODEL_RATE // 1000} kHz s16le" in README
    assert f"{F.CALL_RATE} by default for mulaw/alaw" in README
    for name in ("mp3", "aac", "opus"):
        rates = ", ".join(map(str, F.FORMATS[name].rates or ()))
        assert rates in README, name
    assert f"`speed` {_range(*F.SPEED_RANGE)}" in README
    listed = re.search(r"\* `response_format`: ([^;]+);", README).group(1)
    assert set(re.findall(r"[a-z0-9]+", listed)) == set(F.OPENAI_FORMATS)
    ws = re.search(r"`format`: ([a-z0-9/]+),", README).group(1)
    assert sorted(ws.split("/")) == sorted(F.RAW_FORMATS)


def test_protocol_formats_list_is_the_table():
    row = next(line for line in PROTOCOL.splitlines() if line.startswith("| `format` |"))
    assert re.findall(r"`([a-z0-9]+)`", row.split("|")[4]) == list(F.FORMATS)


@pytest.mark.parametrize("fmt, rate, ok", [
    ("pcm16", 11025, True), ("mp3", 7000, False), ("opus", 44100, False), ("mulaw", 8000, True),
    ("f32", 48000, True), ("wav", 48001, False), ("pcm16", True, False), ("pcm16", 16000.0, False),
])
def test_check_rate(fmt, rate, ok):
    if ok:
        assert F.check_rate(fmt, rate) == rate
    else:
        with pytest.raises(F.AudioFormatError):
            F.check_rate(fmt, rate)


def test_aliases_and_content_types():
    assert F.canonical_format("PCM") == "pcm16" and F.canonical_format("g711_ulaw") == "mulaw"
    assert all(a not in F.FORMATS and t in F.FORMATS for a, t in F.ALIASES.items())
    assert F.content_type("pcm16", 16000) == "audio/pcm;rate=16000"
    assert F.content_type("mp3", 24000) == "audio/mpeg"
    assert all(F.FORMATS[n].sample_width for n in F.RAW_FORMATS)
