"""What the HTTP upstream link sends and reads: OpenAI's speech API as vLLM-Omni serves it.

Pure functions over dicts (no I/O), so the contract test (tests/test_upstream_contract.py)
can hold every request this daemon sends against vLLM-Omni's documented shapes
(``docs/serving/speech_api.md`` in vllm-project/vllm-omni, commit 078de2d1): ``POST
/v1/audio/speech`` with ``stream: true, stream_format: "audio", response_format: "pcm"``
(raw 24 kHz s16le), the Qwen fields ``task_type``, ``language`` (capitalised: ``English``,
``Auto``), ``instructions``, ``max_new_tokens``, ``initial_codec_chunk_frames``; ``GET
/v1/models``; ``GET /v1/audio/voices`` (``{voices, uploaded_voices}``) and ``POST
/v1/audio/voices`` (multipart ``audio_sample``, ``consent``, ``name``, ``ref_text``).

Two flavours: ``omni`` (vLLM-Omni, Dynamo, sglang-omni: no extra fields) and ``qwen3ttsd``
(another qwen3ttsd bridge, told apart by ``owned_by`` in ``/v1/models``: it takes this
project's extra fields - seed, sampling, chunk sizes, ``normalize: false`` - and rejects
the Qwen ``task_type`` field it does not know).
"""

from __future__ import annotations

from typing import Any

from ..engine.request import SynthesisRequest

SPEECH = "/v1/audio/speech"
MODELS = "/v1/models"
VOICES = "/v1/audio/voices"
PCM_RATE = 24_000                 # OpenAI's ``pcm``: 24 kHz mono s16le
TASK_TYPES = {"custom_voice": "CustomVoice", "voice_design": "VoiceDesign", "base": "Base"}
OWN = "qwen3ttsd"                 # ``owned_by`` of this project's bridge's models
UPLOAD_CONSENT = "qwen3ttsd-voice-library"  # the consent the voice was saved with is the front's


def model_type(obj: dict[str, Any]) -> str | None:
    """A ``/v1/models`` entry's Qwen3-TTS type: ours says ``type``; others are told by name
    (``Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice``)."""
    if obj.get("type") in TASK_TYPES:
        return str(obj["type"])
    name = str(obj.get("id", "")).lower().replace("-", "").replace("_", "")
    for t, task in TASK_TYPES.items():
        if name.endswith(task.lower()):
            return t
    return None


def read_models(payload: Any) -> tuple[list[tuple[str, str]], str]:
    """``GET /v1/models`` -> ([(model id, type)], flavour). OpenAI aliases are skipped."""
    data = payload.get("data", []) if isinstance(payload, dict) else []
    models: list[tuple[str, str]] = []
    flavour = "omni"
    for obj in data:
        if not isinstance(obj, dict) or obj.get("alias"):
            continue
        if obj.get("owned_by") == OWN:
            flavour = OWN
        t = model_type(obj)
        if t is not None:
            models.append((str(obj["id"]), t))
    return models, flavour


def read_voices(payload: Any) -> tuple[list[str], list[str]]:
    """``GET /v1/audio/voices`` -> (built-in speakers, uploaded clone voices), for both
    vLLM-Omni's ``{voices, uploaded_voices}`` and OpenAI's ``{data: [Voice]}``."""
    if not isinstance(payload, dict):
        return [], []
    if "voices" in payload:
        uploaded = [str(v.get("name")) for v in payload.get("uploaded_voices") or [] if isinstance(v, dict)]
        return [str(v) for v in payload["voices"] if str(v) not in uploaded], uploaded
    speakers, clones = [], []
    for v in payload.get("data") or []:
        if isinstance(v, dict):
            if v.get("type") == "builtin":
                speakers.append(str(v.get("id")))
            elif v.get("type") in ("audio_sample", "prompt"):
                clones.append(str(v.get("id")))
    return speakers, clones


def language_name(language: str) -> str:
    """Ours (``english``, ``auto``) -> vLLM-Omni's (``English``, ``Auto``)."""
    return (language or "auto").capitalize()


def speech_body(flavour: str, model: str, mtype: str, req: SynthesisRequest, voice: str | None) -> dict[str, Any]:
    """The ``POST /v1/audio/speech`` body for one segment: raw streamed 24 kHz PCM at speed 1
    (speed, resampling and encoding are done in front). ``voice``: the speaker (CustomVoice)
    or the uploaded clone voice's name (Base)."""
    body: dict[str, Any] = {"model": model, "input": req.text, "response_format": "pcm",
                            "stream": True, "stream_format": "audio", "speed": 1.0}
    if voice:
        body["voice"] = voice
    if req.instruct:
        body["instructions"] = req.instruct
    if flavour == OWN:
        body["language"] = req.language
        body["normalize"] = False   # the front normalised and split the text already
        body.update({k: v for k, v in (("seed", req.seed), ("first_chunk_frames", req.first_chunk_frames),
                                       ("chunk_frames", req.chunk_frames), ("max_frames", req.max_frames),
                                       ("temperature", req.temperature), ("top_k", req.top_k),
                                       ("top_p", req.top_p), ("repetition_penalty", req.repetition_penalty))
                     if v is not None})
        return body
    body["task_type"] = TASK_TYPES[mtype]
    body["language"] = language_name(req.language)
    if req.max_frames is not None:
        body["max_new_tokens"] = int(req.max_frames)
    if req.first_chunk_frames:
        body["initial_codec_chunk_frames"] = int(req.first_chunk_frames)
    return body


def voice_form(name: str, ref_text: str | None) -> dict[str, str]:
    """``POST /v1/audio/voices`` text fields (the WAV goes as the ``audio_sample`` file)."""
    form = {"name": name, "consent": UPLOAD_CONSENT}
    if ref_text:
        form["ref_text"] = ref_text
    return form


def error_message(status: int, body: bytes) -> str:
    """An upstream's error body as one line (OpenAI's ``{error: {message}}`` or text)."""
    import json

    try:
        obj = json.loads(body or b"{}")
        err = obj.get("error") if isinstance(obj, dict) else None
        msg = err.get("message") if isinstance(err, dict) else (err or obj.get("message") or obj.get("detail"))
    except (ValueError, AttributeError):
        msg = None
    return f"HTTP {status}: {msg or body[:200].decode('utf-8', 'replace').strip() or 'no body'}"
