"""Text front end: SSML, normalisation, language detection, splitting for streaming. Pure Python.

The bridge imports only ``text.split`` and ``text.language`` (for WebSocket deltas and
language codes); normalisation (num2words, cn2an) loads on first use so the
bridge stays small.

A request's text becomes ``Segment``s: split first (so every segment keeps the words as
written, for captions), then each segment is normalised into what the model speaks. SSML
adds per-piece language, speed and exact pauses.
"""

from __future__ import annotations

from dataclasses import dataclass

from .language import canonical_language, detect_language
from .markup import strip_markup
from .split import IncrementalSplitter, split_segments
from .ssml import Piece, SSMLError, is_ssml, parse_ssml


@dataclass(frozen=True)
class Segment:
    """What one model generation speaks, and how it sits in the audio."""

    text: str                      # spoken form (normalised)
    caption: str                   # as written: what subtitles show
    language: str | None = None    # overrides the request's language (SSML <lang>)
    rate: float = 1.0              # multiplies the request's speed (SSML <prosody rate>)
    pause_before_s: float = 0.0    # exact silence before it (SSML <break>)


def prepare_segments(text: str, language: str = "auto", normalize: bool = True,
                     max_chars: int = 400) -> tuple[list[Segment], float]:
    """Request text (plain or SSML) -> (segments in order, trailing silence in seconds).

    Plain text loses terminal escapes and markup tags (never spoken). Raises ``SSMLError``
    (a ValueError) for unusable SSML."""
    pieces, trailing = parse_ssml(text) if is_ssml(text) else ([Piece(strip_markup(text))], 0.0)
    default = canonical_language(language)
    if default == "auto":  # one guess for the whole text, not one per short segment
        guess, confidence = detect_language(" ".join(p.text for p in pieces))
        default = guess if confidence >= 0.35 else "auto"
    out: list[Segment] = []
    for piece in pieces:
        pause = piece.pause_before_s
        lang = piece.language or default
        for raw in split_segments(piece.text, max_chars=max_chars):
            spoken = _normalize(raw, lang) if normalize else raw
            if spoken.strip():
                out.append(Segment(spoken, raw, piece.language, piece.rate, pause))
                pause = 0.0
    return out, trailing


def prepare_text(text: str, language: str = "auto", normalize: bool = True,
                 max_chars: int = 400) -> list[str]:
    """Raw request text -> the segments the engine speaks, in order."""
    return [s.text for s in prepare_segments(text, language, normalize, max_chars)[0]]


def _normalize(text: str, language: str) -> str:
    from .normalize import normalize

    return normalize(text, language)


__all__ = ["IncrementalSplitter", "Segment", "SSMLError", "split_segments", "prepare_segments",
           "prepare_text"]
