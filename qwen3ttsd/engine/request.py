"""What the scheduler hands an engine backend, and what it gets back: plain dataclasses,
torch-free, so scheduling code and its tests never import the model stack; and the
default frame cap of a request (shared by every prompt builder)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from ..errors import TTSError

FRAME_RATE = 12.5


@dataclass
class SynthesisRequest:
    """One utterance. Which fields matter depends on the model type:
    custom_voice needs ``speaker``; voice_design needs ``instruct``; base needs ``voice``."""

    text: str
    language: str = "auto"
    speaker: str | None = None
    instruct: str | None = None
    voice: str | None = None              # id of a voice registered with add_voice()
    seed: int | None = None
    first_chunk_frames: int = 1
    chunk_frames: int = 4
    max_frames: int | None = None         # runaway cap; default scales with the text
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None


@dataclass
class SynthesisStats:
    frames: int = 0
    samples: int = 0
    chunks: int = 0
    first_audio_s: float | None = None
    total_s: float = 0.0
    hit_frame_cap: bool = False


def wide_chars(text: str) -> int:
    """CJK (East Asian wide and fullwidth) characters in ``text``: each takes ~3-4 times as
    long to say as a letter of an alphabet."""
    return sum(1 for c in text if unicodedata.east_asian_width(c) in ("W", "F"))


def frame_budget(text: str, language: str = "auto") -> int:
    """Upper bound on frames for ``text``: generous for real speech, fatal to runaways.

    Random or confused models (and real ones on odd input) can babble until
    max_new_tokens; scale the cap with how long the text could take to say.
    CJK characters get ~0.45 s each, other letters/digits ~0.12 s, plus 3 s slack.
    """
    wide = wide_chars(text)
    narrow = sum(1 for c in text if c.isalnum()) - wide
    seconds = 3.0 + 0.45 * wide + 0.12 * max(narrow, 0)
    return max(8, min(int(seconds * FRAME_RATE), 8000))


SAMPLING = ("temperature", "top_k", "top_p", "repetition_penalty")


def checked(req: SynthesisRequest, languages: list[str]) -> tuple[str, str, int, dict[str, Any]]:
    """The request's text, language, frame cap and sampling overrides, validated the one way
    both prompt sources (qwen-tts's and the project's) report bad requests."""
    text = (req.text or "").strip()
    if not text:
        raise TTSError("bad_request", "text is empty")
    language = (req.language or "auto").lower()
    if language not in languages:
        raise TTSError("bad_request", f"unsupported language {req.language!r}; supported: {languages}")
    cap = req.max_frames if req.max_frames is not None else frame_budget(text, language)
    if cap < 1:
        raise TTSError("bad_request", "max_frames must be >= 1")
    sampling = {k: getattr(req, k) for k in SAMPLING}
    for k, v in sampling.items():
        if v is not None and (not isinstance(v, (int, float)) or v < 0):
            raise TTSError("bad_request", f"{k} must be a non-negative number")
    return text, language, int(cap), sampling
