"""Text front end: normalisation, language detection, splitting for streaming. Pure Python."""

from __future__ import annotations

from .normalize import normalize
from .split import IncrementalSplitter, split_segments


def prepare_text(text: str, language: str = "auto", normalize_text: bool = True,
                 max_chars: int = 400, **kw) -> list[str]:
    """Raw request text -> the segments the engine speaks, in order."""
    if kw.pop("normalize", normalize_text):
        text = normalize(text, language)
    return split_segments(text, max_chars=max_chars)


__all__ = ["IncrementalSplitter", "split_segments", "normalize", "prepare_text"]
