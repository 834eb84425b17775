"""The client side of the phone WebSocket, shared by the Pipecat and LiveKit integrations.

Why a module of its own: both frameworks speak the same protocol (``bridge/ws.py``:
``session.update`` / ``text`` / ``flush`` / ``cancel`` in, header-prefixed pcm16 frames and
JSON events out), and the two must agree on its details - the URL, the session fields, the
frame header, and how a sentence caption becomes word timings. Framework- and numpy-free.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any

PATH = "/v1/audio/speech/stream"
SAMPLE_RATE = 24000        # the model's rate: pcm16 frames come out at it, never resampled
HEADER = struct.Struct(">II")  # u32 seq, u32 timestamp_ms (audio time since the call began)
_WORD = re.compile(r"\S+")


def ws_url(base_url: str) -> str:
    """``http://host:8880`` (or ``ws://``, with or without ``/v1``) -> the phone WebSocket URL."""
    url = base_url.rstrip("/")
    for plain, secure in (("http://", "https://"), ("ws://", "wss://")):
        if url.startswith(secure):
            url = "wss://" + url[len(secure):]
        elif url.startswith(plain):
            url = "ws://" + url[len(plain):]
    if url.endswith(PATH):
        return url
    return url.removesuffix("/v1") + PATH


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass
class SessionOptions:
    """What a call asks for: ``session.update`` fields; ``None`` leaves the server's default.
    ``voice`` is a built-in speaker, an OpenAI voice name, or a saved clone voice's name."""

    voice: str | None = None
    model: str | None = None
    language: str | None = None        # "en", "en-US", "english"; None: detected per sentence
    instructions: str | None = None    # a style prompt (CustomVoice / VoiceDesign checkpoints)
    speed: float | None = None
    # "stream": a reply is ONE running generation fed as the LLM writes (no prosody restart at
    # each clause, heard before any punctuation); "clause" (in ``extra`` too): one per clause
    text_mode: str = "stream"
    extra: dict[str, Any] = field(default_factory=dict)  # any other field: seed, temperature, max_frames...

    def message(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "session.update", "format": "pcm16", "sample_rate": SAMPLE_RATE,
                               "audio_header": True, "text_mode": self.extra.get("text_mode", self.text_mode)}
        if self.language:
            msg["language"] = re.split(r"[-_]", self.language.strip(), maxsplit=1)[0].lower()
        for key in ("voice", "model", "instructions", "speed"):
            if getattr(self, key) is not None:
                msg[key] = getattr(self, key)
        return {**self.extra, **msg}


def text(piece: str) -> dict[str, Any]:
    return {"type": "text", "text": piece}


FLUSH: dict[str, Any] = {"type": "flush"}
CANCEL: dict[str, Any] = {"type": "cancel"}


def audio_frame(frame: bytes) -> tuple[int, bytes]:
    """A binary frame -> (its audio time on the call's timeline in ms, pcm16 bytes)."""
    _, ts_ms = HEADER.unpack_from(frame)
    return ts_ms, frame[HEADER.size:]


def caption_words(caption: dict[str, Any], origin_ms: int) -> list[tuple[str, float, float]]:
    """A sentence ``caption`` event -> (word, start_s, end_s) relative to ``origin_ms``.

    The server times sentences exactly; the words inside one are spread over its span in
    proportion to their length (an estimate - frameworks want words, the model gives spans)."""
    start = (int(caption["start_ms"]) - origin_ms) / 1000
    end = (int(caption["end_ms"]) - origin_ms) / 1000
    words = _WORD.findall(str(caption.get("text", "")))
    total = sum(len(w) for w in words) or 1
    out, t = [], start
    for w in words:
        step = (end - start) * len(w) / total
        out.append((w, round(t, 3), round(t + step, 3)))
        t += step
    return out
