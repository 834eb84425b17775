"""What a voice-agent app moving off OpenAI needs besides speech (issue 20): a warm-up it can
call before it speaks (Pipecat gives up after 3 s without audio), and voices designed from a
prompt (OpenAI's ``POST /v1/audio/voices`` with ``type: "prompt"``). The real bridge
(--activate) and daemon over every tiny checkpoint, driven through the OpenAI SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from .test_bridge import Bridge

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bridge(tiny_models, tmp_path_factory):
    b = Bridge(tmp_path_factory.mktemp("agents"), tiny_models["custom_voice"].parent)
    yield b
    b.stop()


def warmup(sdk: openai.OpenAI, **body) -> dict:
    """How a Python app warms up: the SDK's own client, any JSON path."""
    return sdk.post("/audio/warmup", body=body, cast_to=object)


# --- POST /v1/audio/warmup (item 5) ---------------------------------------------------------


def test_warmup_starts_the_daemon_and_loads_the_model(bridge):
    sdk = bridge.openai()
    assert bridge.health()["daemon"]["spawns"] == 0  # first in this module: nothing woke it yet
    first = warmup(sdk, model="tts-1")
    assert first["object"] == "audio.warmup" and first["ready"] is True
    assert first["model"] == "custom_voice" and first["already_loaded"] is False
    assert first["load_s"] > 0 and first["elapsed_s"] >= first["load_s"]
    assert bridge.health()["daemon"]["spawns"] == 1
    again = warmup(sdk, model="tts-1-hd", voice="alloy")
    assert again["already_loaded"] is True and again["load_s"] < first["load_s"]
    # no body at all: the default model
    r = httpx.post(bridge.url + "/v1/audio/warmup", timeout=60)
    assert r.status_code == 200 and r.json()["model"] == "custom_voice"
    # a checkpoint by name, even one that needs a voice to speak
    assert warmup(sdk, model="base")["model"] == "base"


def test_warmup_errors_are_json_4xx(bridge):
    sdk = bridge.openai()
    with pytest.raises(openai.NotFoundError) as e:
        warmup(sdk, model="no-such-model")
    assert "no-such-model" in str(e.value)
    for body, param in (({"model": 5}, "model"), ({"speed": 1}, "speed"), ({"language": "klingon"}, "language")):
        r = httpx.post(bridge.url + "/v1/audio/warmup", json=body, timeout=60)
        assert r.status_code == 400 and r.headers["content-type"] == "application/json", (body, r.text)
        assert r.json()["error"]["param"] == param, r.json()
    r = httpx.post(bridge.url + "/v1/audio/warmup", content=b"{not json", timeout=60)
    assert r.status_code == 400
