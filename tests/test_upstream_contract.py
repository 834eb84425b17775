"""The HTTP requests the upstream backend sends, held against vLLM-Omni's documented speech
API (vllm-project/vllm-omni ``docs/serving/speech_api.md`` at commit 078de2d1, the
"Request Parameters", "Voices Endpoint" and "Response Format" sections), and what it reads
back from the documented response examples. Also the URL list's parsing. No I/O."""

from __future__ import annotations

import pytest

from qwen3ttsd.engine.request import SynthesisRequest
from qwen3ttsd.upstream import shapes, targets

# speech_api.md: OpenAI standard parameters + vLLM-Omni extension + voice clone parameters
OMNI_SPEECH_FIELDS = {
    "input": str, "model": str, "voice": str, "response_format": str, "speed": float,
    "task_type": str, "language": str, "instructions": str, "max_new_tokens": int,
    "initial_codec_chunk_frames": int, "non_streaming_mode": bool, "stream": bool, "stream_format": str,
    "ref_audio": str, "ref_text": str, "x_vector_only_mode": bool,
}
OMNI_LANGUAGES = {"Auto", "Chinese", "English", "Japanese", "Korean", "German", "French", "Russian",
                  "Portuguese", "Spanish", "Italian"}
OMNI_VOICES = {  # the "GET /v1/audio/voices" example
    "voices": ["aiden", "dylan", "eric", "ono_anna", "ryan", "serena", "sohee", "uncle_fu", "vivian", "custom_voice_1"],
    "uploaded_voices": [{"name": "custom_voice_1", "consent": "user_consent_id", "created_at": 1738660000,
                         "file_size": 1024000, "mime_type": "audio/wav", "ref_text": "The exact transcript."}]}
OMNI_UPLOAD_FIELDS = {"audio_sample", "consent", "name", "ref_text", "speaker_description"}


@pytest.mark.parametrize("mtype,req,voice", [
    ("custom_voice", SynthesisRequest("Hello.", "english", speaker="ryan", instruct="warmly", max_frames=300), "ryan"),
    ("voice_design", SynthesisRequest("Hello.", "auto", instruct="a calm old man"), None),
    ("base", SynthesisRequest("Hello.", "german", voice="anna"), "anna-0123456789ab"),
])
def test_speech_body_matches_vllm_omni_documented_fields(mtype, req, voice):
    body = shapes.speech_body("omni", "Qwen/Qwen3-TTS-12Hz-1.7B-X", mtype, req, voice)
    assert set(body) <= set(OMNI_SPEECH_FIELDS), set(body) - set(OMNI_SPEECH_FIELDS)
    for k, v in body.items():
        assert isinstance(v, OMNI_SPEECH_FIELDS[k]), k
    # "Both streaming modes require response_format pcm or wav, and speed must be 1.0"
    assert body["stream"] is True and body["stream_format"] == "audio" and body["response_format"] == "pcm"
    assert body["speed"] == 1.0
    assert body["task_type"] in ("CustomVoice", "VoiceDesign", "Base")
    assert body["task_type"] == shapes.TASK_TYPES[mtype]
    assert body["language"] in OMNI_LANGUAGES
    if mtype == "voice_design":  # "VoiceDesign must be specified explicitly" with instructions
        assert body["instructions"] and "voice" not in body
    if mtype == "base":          # an uploaded voice is used by name
        assert body["voice"] == voice


def test_own_bridge_flavour_carries_exact_decode_fields_and_no_task_type():
    req = SynthesisRequest("Hi.", "english", speaker="ryan", seed=7, first_chunk_frames=1, chunk_frames=2)
    body = shapes.speech_body(shapes.OWN, "custom_voice", "custom_voice", req, "ryan")
    assert "task_type" not in body and body["seed"] == 7 and body["normalize"] is False
    from qwen3ttsd.bridge.openai_compat import KNOWN_FIELDS  # our bridge accepts every field we send
    assert set(body) <= KNOWN_FIELDS


def test_reads_documented_models_and_voices():
    models, flavour = shapes.read_models({"object": "list", "data": [
        {"id": "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice", "object": "model", "owned_by": "vllm-omni"}]})
    assert models == [("Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice", "custom_voice")] and flavour == "omni"
    speakers, uploaded = shapes.read_voices(OMNI_VOICES)
    assert "custom_voice_1" not in speakers and "ryan" in speakers and uploaded == ["custom_voice_1"]
    models, flavour = shapes.read_models({"data": [{"id": "tts-1", "alias": True, "owned_by": "qwen3ttsd"},
                                                   {"id": "b", "type": "base", "owned_by": "qwen3ttsd"}]})
    assert models == [("b", "base")] and flavour == shapes.OWN


def test_voice_upload_form_is_the_documented_one():
    form = shapes.voice_form("anna-0123", "Transcript.")
    assert set(form) | {"audio_sample"} <= OMNI_UPLOAD_FIELDS and form["consent"]


def test_error_bodies_become_one_line():
    body = b'{"success": false, "error": "Voice x not found"}'   # the documented DELETE 404
    assert shapes.error_message(404, body) == "HTTP 404: Voice x not found"
    assert "boom" in shapes.error_message(500, b'{"error": {"message": "boom"}}')


def test_targets_parse():
    ts = targets.parse("unix:///run/a/tts.sock, https://k1@gpu:8091/p/?cap=4,http://h", key="K")
    assert [(t.kind, t.address, t.key, t.cap) for t in ts] == [
        ("unix", "/run/a/tts.sock", "", targets.DEFAULT_CAP), ("http", "https://gpu:8091/p", "k1", 4),
        ("http", "http://h", "K", targets.DEFAULT_CAP)]
    for bad in ("ftp://x", "unix://rel", "http://h?cap=0", "http://h,http://h"):
        with pytest.raises(ValueError, match="upstream"):
            targets.parse(bad)
