"""Captions as subtitle files: SRT and WebVTT from the daemon's ``tts.segment`` spans.

Each caption is ``{"index", "text", "start", "end"}`` with times in seconds of the audio
as delivered (after speed change and SSML pauses). Torch- and numpy-free.
"""

from __future__ import annotations

from pathlib import Path


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(captions: list[dict]) -> str:
    blocks = [f"{i}\n{_stamp(c['start'], ',')} --> {_stamp(c['end'], ',')}\n{c['text']}\n"
              for i, c in enumerate(captions, 1)]
    return "\n".join(blocks)


def to_vtt(captions: list[dict]) -> str:
    blocks = [f"{_stamp(c['start'], '.')} --> {_stamp(c['end'], '.')}\n{c['text']}\n" for c in captions]
    return "WEBVTT\n\n" + "\n".join(blocks)


def write(path: str | Path, captions: list[dict]) -> None:
    """``.vtt`` gives WebVTT, anything else SRT."""
    text = to_vtt(captions) if str(path).lower().endswith(".vtt") else to_srt(captions)
    Path(path).write_text(text, encoding="utf-8")
