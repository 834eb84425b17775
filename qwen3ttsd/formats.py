"""Audio formats and the audio numbers every layer shares - one table, torch- and numpy-free.

The daemon's encoders (``audio/``), the bridge's OpenAI and WebSocket front ends and the
wire-message bounds (``messages.py``) all read this module, so adding an output format or
changing a limit is one edit here, and the bridge (no numpy) needs no copy of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_RATE = 24_000                  # what the 12 Hz codec decodes to (Hz)
FRAME_SAMPLES = 1920                 # one codec frame: 80 ms at MODEL_RATE
RATE_RANGE = (8000, 48_000)          # what a request may ask for (soxr resamples, streaming)
SPEED_RANGE = (0.25, 4.0)            # pitch-preserving WSOLA
CALL_RATE = 8000                     # G.711 on a phone call when no rate is asked for


@dataclass(frozen=True)
class ChunkProfile:
    """Codec frames before the first audio chunk, and per later chunk."""

    first_chunk_frames: int
    chunk_frames: int


CHUNK_PROFILES = {
    "default": ChunkProfile(first_chunk_frames=1, chunk_frames=4),   # HTTP: fewer, larger chunks
    "call": ChunkProfile(first_chunk_frames=1, chunk_frames=2),      # WebSocket calls: low latency
}


class AudioFormatError(ValueError):
    """Unknown format, unsupported sample rate, or a missing encoder backend."""


@dataclass(frozen=True)
class AudioFormat:
    name: str
    mime: str
    raw: bool                                 # headerless samples: any rate, streamable frame by frame
    sample_width: int | None = None           # bytes per sample of raw formats (WebSocket timing)
    rates: tuple[int, ...] | None = None      # the encoder's rates; None: any in RATE_RANGE
    openai: str | None = None                 # OpenAI ``response_format`` name (None: same as name)
    telephony: bool = False                   # G.711: calls default to CALL_RATE

    @property
    def openai_name(self) -> str:
        return self.openai or self.name


_MPEG_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

FORMATS: dict[str, AudioFormat] = {f.name: f for f in (
    AudioFormat("pcm16", "audio/pcm", raw=True, sample_width=2, openai="pcm"),
    AudioFormat("f32", "audio/x-f32le", raw=True, sample_width=4),
    AudioFormat("wav", "audio/wav", raw=False),        # PCM16 with a streaming RIFF header
    AudioFormat("mulaw", "audio/basic", raw=True, sample_width=1, telephony=True),
    AudioFormat("alaw", "audio/x-alaw-basic", raw=True, sample_width=1, telephony=True),
    AudioFormat("flac", "audio/flac", raw=False),
    AudioFormat("mp3", "audio/mpeg", raw=False, rates=_MPEG_RATES),
    AudioFormat("opus", "audio/ogg", raw=False, rates=(8000, 12000, 16000, 24000, 48000)),
    AudioFormat("aac", "audio/aac", raw=False, rates=_MPEG_RATES),
)}
ALIASES = {"pcm": "pcm16", "s16le": "pcm16", "pcm_s16le": "pcm16", "ulaw": "mulaw",
           "g711_ulaw": "mulaw", "pcmu": "mulaw", "g711_alaw": "alaw", "pcma": "alaw",
           "ogg": "opus", "float32": "f32"}
OPENAI_FORMATS = {f.openai_name: f for f in FORMATS.values()}   # response_format -> format
RAW_FORMATS = tuple(n for n, f in FORMATS.items() if f.raw)       # what a WebSocket call can carry


def canonical_format(name: str) -> str:
    n = (name or "").lower()
    n = ALIASES.get(n, n)
    if n not in FORMATS:
        raise AudioFormatError(f"unknown audio format {name!r}; supported: {sorted(FORMATS)}")
    return n


def check_rate(fmt: str, sample_rate: object) -> int:
    """``sample_rate`` if format ``fmt`` (canonical) can be encoded at it, else AudioFormatError."""
    lo, hi = RATE_RANGE
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or not lo <= sample_rate <= hi:
        raise AudioFormatError(f"sample rate {sample_rate!r} out of range {lo}..{hi}")
    allowed = FORMATS[fmt].rates
    if allowed is not None and sample_rate not in allowed:
        raise AudioFormatError(f"{fmt} does not support {sample_rate} Hz; use one of {list(allowed)}")
    return sample_rate


def content_type(fmt: str, sample_rate: int) -> str:
    """HTTP Content-Type: raw samples carry their rate (``audio/pcm;rate=24000``)."""
    f = FORMATS[fmt]
    return f"{f.mime};rate={sample_rate}" if f.raw else f.mime


__all__ = ["MODEL_RATE", "FRAME_SAMPLES", "RATE_RANGE", "SPEED_RANGE", "CALL_RATE", "CHUNK_PROFILES",
           "ChunkProfile", "AudioFormat", "AudioFormatError", "FORMATS", "ALIASES", "OPENAI_FORMATS",
           "RAW_FORMATS", "canonical_format", "check_rate", "content_type"]
