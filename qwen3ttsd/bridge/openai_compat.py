"""Mapping OpenAI's speech API onto the daemon's synthesize parameters.

``priority: realtime`` (scheduled first, with queue slots of its own in the daemon) is for
phone calls: the WebSocket call path sets it itself. Over plain HTTP only a client holding
the API key may ask for it (with no key set, anyone on the LAN could, and a burst of such
requests would starve the calls it exists for); others get 403 ``forbidden``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import TTSError
from ..formats import OPENAI_FORMATS
from ..messages import Bool, Message, Num, Synthesize, bad
from ..text.language import LANG_CODES  # ISO suffixes in model names ("tts-1-es"); light import

# OpenAI voice -> Qwen3-TTS CustomVoice speaker (closest timbre; English speakers first).
VOICE_MAP = {
    "alloy": "vivian", "ash": "ryan", "ballad": "uncle_fu", "coral": "serena", "echo": "aiden",
    "fable": "dylan", "onyx": "eric", "nova": "ono_anna", "sage": "sohee", "shimmer": "serena",
    "verse": "ryan", "marin": "vivian", "cedar": "aiden",
}
# OpenAI's speech model names (GET /v1/models lists them); every one means "the default model".
OPENAI_MODELS = ("tts-1", "tts-1-hd", "tts-1-1106", "tts-1-hd-1106", "gpt-4o-mini-tts",
                 "gpt-4o-mini-tts-2025-03-20", "gpt-4o-mini-tts-2025-12-15")
# base name, optional snapshot (``-1106`` or a ``-YYYY-MM-DD`` date), optional language suffix
_OPENAI_NAME = re.compile(r"(tts-1(?:-hd)?|gpt-4o-mini-tts)(-1106|-\d{4}-\d{2}-\d{2})?(?:-(.+))?")
# Extra (non-OpenAI) fields: passed on as they are, typed and bounded by messages.Synthesize.
EXTRA_FIELDS = ("language", "priority", "normalize", "seed", "sample_rate", "top_k", "chunk_frames",
                "first_chunk_frames", "max_frames", "temperature", "top_p", "repetition_penalty")
OPENAI_FIELDS = ("model", "input", "voice", "response_format", "speed", "instructions", "stream_format")
IGNORED_FIELDS = ("stream", "user")  # sent by some clients; they change nothing here
KNOWN_FIELDS = frozenset(OPENAI_FIELDS + tuple(EXTRA_FIELDS) + IGNORED_FIELDS)


def _reject_constant(name: str) -> Any:
    raise bad(f"{name} is not a valid JSON number")


def _finite_float(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise bad(f"number {text[:20]} is out of range")
    return v


def parse_json(raw: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no overflowing numbers, no lone surrogates - each a
    clear 400 instead of a 500 somewhere downstream."""
    try:
        body = json.loads(raw or b"{}", parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise bad("request body is nested too deeply") from None
    except ValueError:  # includes UnicodeDecodeError and int digit limits
        raise bad("request body is not valid JSON") from None
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad("request body contains invalid Unicode (a lone surrogate)") from None
    except RecursionError:
        raise bad("request body is nested too deeply") from None
    return body


def model_and_language(model: str | None) -> tuple[str | None, str | None]:
    """OpenAI names -> (None, language): 'tts-1' / 'tts-1-hd-1106' / 'gpt-4o-mini-tts-2025-12-15'
    -> (None, None); 'tts-1-es' / 'tts-1-hd-es' -> (None, 'spanish'). Other names pass through."""
    if not model:
        return None, None
    m = str(model)
    match = _OPENAI_NAME.fullmatch(m.lower())
    if match is None:
        if m.lower().startswith(("tts-1-", "gpt-4o-mini-tts-")):
            raise bad(f"unknown model {m!r}: OpenAI names are {list(OPENAI_MODELS)}, optionally "
                      "followed by a language code ('tts-1-es')", "model")
        return m, None
    code = match.group(3)
    if code is None:
        return None, None
    if code in LANG_CODES:
        return None, LANG_CODES[code]
    raise bad(f"unknown language suffix {code!r} in model {m!r}; known: {sorted(LANG_CODES)}", "model")


def _choice(body: dict[str, Any], key: str, options: tuple[str, ...], default: str) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or value not in options:
        raise bad(f"{key} must be one of {sorted(options)}", key)
    return value


def speech_params(body: dict[str, Any], max_chars: int, realtime: bool = False) -> tuple[Synthesize, str, str]:
    """Validate an OpenAI speech body; returns (daemon request, response_format, stream_format).
    ``realtime``: the caller may ask for ``priority: realtime`` (it holds the API key)."""
    if not isinstance(body, dict):
        raise bad("request body must be a JSON object")
    if body.get("priority") == "realtime" and not realtime:
        raise TTSError("forbidden", "priority 'realtime' is reserved for calls (the WebSocket API) and, over "
                       "HTTP, for clients with the API key (none is set)", data={"param": "priority"})
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise bad(f"unknown field {unknown[0]!r}; accepted: {sorted(KNOWN_FIELDS - set(IGNORED_FIELDS))}",
                  unknown[0])
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
    rf = _choice(body, "response_format", tuple(OPENAI_FORMATS), "mp3")
    sf = _choice(body, "stream_format", ("audio", "sse"), "audio")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad("model must be a string", "model")
    model, lang = model_and_language(model)
    wire: dict[str, Any] = {"text": text, "voice": VOICE_MAP.get(voice.lower(), voice),
                            "format": OPENAI_FORMATS[rf].name, "speed": body.get("speed"),
                            "model": model, "language": lang}
    instructions = body.get("instructions")
    if instructions is not None and (not isinstance(instructions, str) or instructions.strip()):
        wire["instructions"] = instructions  # a blank one means none
    wire.update({k: body[k] for k in EXTRA_FIELDS if body.get(k) is not None})
    return Synthesize.from_wire(wire, strict=True, limits={"text": max_chars}), rf, sf


def form_fields(form: dict[str, str], message: type[Message[Any]] = Synthesize) -> dict[str, Any]:
    """Multipart text fields as JSON would carry them: numbers and booleans parsed by the
    kind ``message`` declares for each."""
    out: dict[str, Any] = dict(form)
    names = message.wire_names()
    for k, v in form.items():
        kind = message.kind_of(k) if k in names else None
        if isinstance(kind, Num):
            try:
                out[k] = int(v) if kind.whole else float(v)
            except ValueError:
                raise bad(f"{k} must be {'an integer' if kind.whole else 'a number'}", k) from None
        elif isinstance(kind, Bool) and v.lower() in ("true", "false"):
            out[k] = v.lower() == "true"
    return out
