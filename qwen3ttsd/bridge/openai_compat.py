"""Mapping OpenAI's speech API onto the daemon's synthesize parameters."""

from __future__ import annotations

from typing import Any

from ..errors import TTSError
from ..text.language import LANG_CODES  # ISO suffixes in model names ("tts-1-es"); light import

# OpenAI voice -> Qwen3-TTS CustomVoice speaker (closest timbre; English speakers first).
VOICE_MAP = {
    "alloy": "vivian", "ash": "ryan", "ballad": "uncle_fu", "coral": "serena", "echo": "aiden",
    "fable": "dylan", "onyx": "eric", "nova": "ono_anna", "sage": "sohee", "shimmer": "serena",
    "verse": "ryan", "marin": "vivian", "cedar": "aiden",
}
OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
# response_format -> (daemon format, Content-Type)
FORMATS = {
    "mp3": ("mp3", "audio/mpeg"), "opus": ("opus", "audio/ogg"), "aac": ("aac", "audio/aac"),
    "flac": ("flac", "audio/flac"), "wav": ("wav", "audio/wav"), "pcm": ("pcm16", "audio/pcm"),
    "mulaw": ("mulaw", "audio/basic"), "alaw": ("alaw", "audio/x-alaw-basic"),
    "f32": ("f32", "audio/x-f32le"),
}
EXTRA_FIELDS = ("language", "seed", "sample_rate", "temperature", "top_k", "top_p",
                "repetition_penalty", "priority", "chunk_frames", "first_chunk_frames", "normalize",
                "max_frames")


def bad(message: str, param: str | None = None) -> TTSError:
    return TTSError("bad_request", message, data={"param": param} if param else None)


def model_and_language(model: str | None) -> tuple[str | None, str | None]:
    """'tts-1' -> (None, None); 'tts-1-es' -> (None, 'spanish'); other names pass through."""
    if not model:
        return None, None
    m = str(model)
    for base in OPENAI_MODELS:
        if m == base:
            return None, None
        if m.startswith(base + "-"):
            code = m[len(base) + 1:].lower()
            if code in LANG_CODES:
                return None, LANG_CODES[code]
            raise bad(f"unknown language suffix {code!r} in model {m!r}", "model")
    return m, None


def speech_params(body: dict[str, Any], max_chars: int) -> tuple[dict[str, Any], str, str]:
    """Validate an OpenAI speech body; returns (daemon params, response_format, stream_format)."""
    if not isinstance(body, dict):
        raise bad("request body must be a JSON object")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise bad("'input' is required and must be a non-empty string", "input")
    if len(text) > max_chars:
        raise TTSError("payload_too_large", f"'input' is longer than {max_chars} characters",
                       data={"param": "input"})
    voice = body.get("voice", "alloy")
    if isinstance(voice, dict):  # {"id": "my-voice"} for custom voices
        voice = voice.get("id")
    if not isinstance(voice, str) or not voice:
        raise bad("'voice' must be a string or {\"id\": ...}", "voice")
    voice = VOICE_MAP.get(voice.lower(), voice)
    rf = body.get("response_format", "mp3")
    if rf not in FORMATS:
        raise bad(f"response_format must be one of {sorted(FORMATS)}", "response_format")
    sf = body.get("stream_format", "audio")
    if sf not in ("audio", "sse"):
        raise bad("stream_format must be 'audio' or 'sse'", "stream_format")
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        raise bad("speed must be a number from 0.25 to 4.0", "speed")
    model, lang = model_and_language(body.get("model"))
    params: dict[str, Any] = {"text": text, "voice": voice, "format": FORMATS[rf][0], "speed": float(speed)}
    if model:
        params["model"] = model
    if lang:
        params["language"] = lang
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise bad("instructions must be a string", "instructions")
        if instructions.strip():
            params["instructions"] = instructions
    for k in EXTRA_FIELDS:
        if body.get(k) is not None:
            params[k] = body[k]
    if rf == "pcm" and "sample_rate" not in params:
        params["sample_rate"] = 24000
    return params, rf, sf
