"""Text front end: normalisation, language detection, splitting for streaming. Pure Python.

The bridge imports only ``text.split`` (for WebSocket deltas) and ``text.language`` (the
language-code mapping); normalisation (inflect, cn2an, num2words) loads on first use so
the bridge stays small.
"""

from __future__ import annotations

from .split import IncrementalSplitter, split_segments


def prepare_text(text: str, language: str = "auto", normalize: bool = True,
                 max_chars: int = 400) -> list[str]:
    """Raw request text -> the segments the engine speaks, in order."""
    if normalize:
        from .normalize import normalize as _normalize

        text = _normalize(text, language)
    return split_segments(text, max_chars=max_chars)


__all__ = ["IncrementalSplitter", "split_segments", "prepare_text"]
