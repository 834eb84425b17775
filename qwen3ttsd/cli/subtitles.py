"""Captions as subtitle files: SRT and WebVTT from the daemon's ``tts.segment`` spans.

Each caption is ``{"index", "text", "start", "end"}`` with times in seconds of the audio
as delivered (after speed change and SSML pauses). The text is the user's input as
written, so it is untrusted: a blank line in it would end the cue and let the rest forge
cues and timings, and WebVTT reads ``<``/``&`` as markup. Every caption becomes exactly one
cue with one text line (whitespace and control characters collapse to single spaces), SRT
loses its ``-->`` arrows (it has no escapes), WebVTT's text is escaped; a caption with
nothing left to show is dropped. Torch- and numpy-free.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

# Whitespace (line and paragraph separators included) and the other control characters.
_BLANKS = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_VTT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}  # '>' too, so '-->' cannot appear


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000)) if math.isfinite(seconds) else 0
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _one_line(text: str) -> str:
    return _BLANKS.sub(" ", text).strip()


def _srt_text(text: str) -> str:
    line = _one_line(text)
    while "-->" in line:
        line = line.replace("-->", "->")
    return line


def _vtt_text(text: str) -> str:
    return re.sub(r"[&<>]", lambda m: _VTT_ESCAPES[m[0]], _one_line(text))


def to_srt(captions: list[dict]) -> str:
    shown = [(c, t) for c in captions if (t := _srt_text(str(c["text"])))]
    blocks = [f"{i}\n{_stamp(c['start'], ',')} --> {_stamp(c['end'], ',')}\n{t}\n"
              for i, (c, t) in enumerate(shown, 1)]
    return "\n".join(blocks)


def to_vtt(captions: list[dict]) -> str:
    shown = [(c, t) for c in captions if (t := _vtt_text(str(c["text"])))]
    blocks = [f"{_stamp(c['start'], '.')} --> {_stamp(c['end'], '.')}\n{t}\n" for c, t in shown]
    return "WEBVTT\n\n" + "\n".join(blocks)


def write(path: str | Path, captions: list[dict]) -> None:
    """``.vtt`` gives WebVTT, anything else SRT."""
    text = to_vtt(captions) if str(path).lower().endswith(".vtt") else to_srt(captions)
    Path(path).write_text(text, encoding="utf-8")
