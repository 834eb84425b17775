"""The bridge in-process against a stand-in daemon (``fakedaemon.py``): the OpenAI SDK's
model names, ``models.retrieve``, request ids. Fast: no model, no uvicorn."""

from __future__ import annotations

import json
import re

import openai
import pytest
from starlette.testclient import TestClient

from qwen3ttsd.bridge.app import create_app
from qwen3ttsd.bridge.openai_compat import model_and_language
from qwen3ttsd.config import BridgeConfig
from qwen3ttsd.errors import TTSError

from .fakedaemon import FakeDaemon


@pytest.fixture()
def daemon(tmp_path):
    (tmp_path / "rt").mkdir()
    d = FakeDaemon(tmp_path / "rt" / "tts.sock")
    yield d
    d.close()


@pytest.fixture()
def http(daemon, tmp_path):
    app = create_app(BridgeConfig(runtime_dir=str(tmp_path / "rt")))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture()
def sdk(http):
    return openai.OpenAI(base_url="http://127.0.0.1/v1", api_key="unused", max_retries=0, http_client=http)


# --- model names (issue 20 item 1) ---------------------------------------------------------

OPENAI_NAMES = ["tts-1", "tts-1-hd", "tts-1-1106", "tts-1-hd-1106", "gpt-4o-mini-tts",
                "gpt-4o-mini-tts-2025-03-20", "gpt-4o-mini-tts-2025-12-15"]


@pytest.mark.parametrize("name", OPENAI_NAMES)
def test_every_openai_model_name_is_an_alias(name):
    assert model_and_language(name) == (None, None)
    assert model_and_language(name + "-es") == (None, "spanish")


@pytest.mark.parametrize(("name", "want"), [("tts-1-es", "spanish"), ("tts-1-hd-es", "spanish"),
                                            ("tts-1-hd-1106-de", "german"), ("gpt-4o-mini-tts-ja", "japanese"),
                                            ("TTS-1-HD-EN", "english")])
def test_language_suffixes(name, want):
    assert model_and_language(name) == (None, want)


@pytest.mark.parametrize("name", ["tts-1-xx", "tts-1-hd-xx", "gpt-4o-mini-tts-2025-13", "tts-1-1107"])
def test_unknown_suffixes_are_refused(name):
    with pytest.raises(TTSError) as e:
        model_and_language(name)
    assert e.value.code == "bad_request"


def test_checkpoint_names_pass_through():
    assert model_and_language("custom_voice") == ("custom_voice", None)
    assert model_and_language("Qwen/Qwen3-TTS-12Hz-0.6B-Base") == ("Qwen/Qwen3-TTS-12Hz-0.6B-Base", None)


@pytest.mark.parametrize("name", OPENAI_NAMES + ["tts-1-hd-es"])
def test_sdk_speaks_with_every_openai_model_name(sdk, daemon, name):
    r = sdk.audio.speech.create(model=name, voice="alloy", input="Hello.", response_format="pcm")
    assert r.content == b"Hello.|0;Hello.|1;"
    params = daemon.last()
    assert "model" not in params and params["language"] == ("spanish" if name.endswith("-es") else "auto")


# --- GET /v1/models/{id} (issue 20 item 3) -------------------------------------------------


def test_models_retrieve_known_names(sdk):
    listed = {m.id for m in sdk.models.list().data}
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "custom_voice", "base"} <= listed
    for name in listed:
        m = sdk.models.retrieve(name)
        assert m.id == name and m.object == "model" and m.owned_by == "qwen3ttsd" and isinstance(m.created, int)
    assert sdk.models.retrieve("custom_voice").model_extra["type"] == "custom_voice"
    assert sdk.models.retrieve("tts-1-hd-es").id == "tts-1-hd-es"  # every name speech accepts as a model


def test_models_retrieve_unknown_is_a_json_404(sdk, http):
    with pytest.raises(openai.NotFoundError) as e:
        sdk.models.retrieve("no-such-model")
    r = http.get("/v1/models/no-such-model")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "not_found" and r.json()["error"]["param"] == "model"
    assert "no-such-model" in str(e.value)


# --- one turn's segments: in order, at most 3 open in the daemon (issue 18 item 6, 21 item 5) -


TURN = [f"This is sentence number {i} of the turn." for i in range(100)]


def spoken(texts: list[str], chunks: int = 2) -> bytes:
    return b"".join(f"{t}|{i};".encode() for t in texts for i in range(chunks))


def ws_turn(http, text: str) -> tuple[bytes, list[dict]]:
    audio, events = bytearray(), []
    with http.websocket_connect("ws://127.0.0.1/v1/audio/speech/stream") as ws:
        ws.send_json({"type": "session.update", "audio_header": False, "text_mode": "clause"})  # segments
        ws.send_json({"type": "text", "text": text})
        ws.send_json({"type": "flush"})
        while True:
            m = ws.receive()
            if m.get("bytes") is not None:
                audio += m["bytes"]
                continue
            events.append(ev := json.loads(m["text"]))
            if ev["type"] in ("flushed", "error"):
                return bytes(audio), events


def test_a_100_sentence_turn_holds_its_segments_in_the_bridge(http, daemon):
    daemon.chunk_delay = 0.002
    audio, events = ws_turn(http, " ".join(TURN))
    assert audio == spoken(TURN)                                  # all 100 spoken, in order
    assert daemon.texts == TURN and daemon.max_open <= 3           # never more than 3 requests open
    done = [e["index"] for e in events if e["type"] == "segment.done"]
    assert done == list(range(100))


def test_a_busy_daemon_delays_a_segment_but_never_reorders(http, daemon):
    daemon.busy = {TURN[1]: 2}  # the daemon's queue is full twice for the second sentence
    audio, events = ws_turn(http, " ".join(TURN[:5]))
    assert audio == spoken(TURN[:5]) and daemon.texts == TURN[:5]
    assert not [e for e in events if e["type"] == "error"]


def test_a_daemon_that_dies_before_audio_costs_one_retry(http, daemon):
    daemon.hang_up = {TURN[0]: 1, "Hello.": 1}
    audio, _ = ws_turn(http, " ".join(TURN[:3]))
    assert audio == spoken(TURN[:3])
    r = http.post("/v1/audio/speech", json={"input": "Hello.", "response_format": "pcm"})
    assert r.status_code == 200 and r.content == b"Hello.|0;Hello.|1;"


def test_segments_and_their_requests_in_one_place():
    """ws.py and wyoming.py build on segments.py; neither keeps its own copy of the logic."""
    import inspect

    from qwen3ttsd.bridge import ws, wyoming
    from qwen3ttsd.bridge.routes import speech

    for mod in (ws, wyoming, speech):
        src = inspect.getsource(mod)
        assert "ConnectionLost" not in src and "retry" not in src.lower() and "synthesize(" not in src, mod
    assert "24000" not in inspect.getsource(wyoming)


# --- x-request-id (issue 20 item 4) ---------------------------------------------------------


def test_every_http_response_carries_a_request_id(http, sdk):
    ids = {http.get(p).headers.get("x-request-id") for p in ("/health", "/v1/models", "/no/such/path")}
    r = http.post("/v1/audio/speech", json={"input": "x", "speed": 9})  # a 400
    ids.add(r.headers.get("x-request-id"))
    refused = http.get("/health", headers={"host": "evil.example"})   # refused by the guard: 403
    assert refused.status_code == 403
    ids.add(refused.headers.get("x-request-id"))
    assert None not in ids and len(ids) == 5 and all(i.startswith("req_") for i in ids)
    assert sdk.models.retrieve("tts-1")._request_id.startswith("req_")
    raw = sdk.audio.speech.with_raw_response.create(model="tts-1-hd", voice="alloy", input="Hi.")
    assert raw.headers["x-request-id"].startswith("req_")


def test_a_clients_request_id_is_kept_when_sane(http, sdk):
    r = sdk.audio.speech.with_raw_response.create(model="tts-1", voice="alloy", input="Hi.",
                                                  extra_headers={"X-Request-Id": "lk-utt-42"})
    assert r.headers["x-request-id"] == "lk-utt-42"
    for bad_id in ("x" * 300, "two words", "tab\there", ""):
        got = http.get("/health", headers={"x-request-id": bad_id}).headers["x-request-id"]
        assert got.startswith("req_") and got != bad_id


def test_sse_and_websocket_events_name_the_request(http):
    with http.stream("POST", "/v1/audio/speech", headers={"x-request-id": "sse-1"},
                     json={"input": "Hi.", "response_format": "pcm", "stream_format": "sse"}) as r:
        first = json.loads(next(r.iter_lines()).removeprefix("data: "))
    assert r.headers["x-request-id"] == "sse-1" and first["request_id"] == "sse-1"
    with http.websocket_connect("ws://127.0.0.1/v1/audio/speech/stream", headers={"x-request-id": "call-7"}) as ws:
        assert ws.receive_json()["request_id"] == "call-7"
    with http.websocket_connect("ws://127.0.0.1/v1/audio/speech/stream") as ws:
        assert ws.receive_json()["request_id"].startswith("req_")


def test_an_unexpected_exception_is_a_json_500_with_the_request_id(http, monkeypatch):
    from qwen3ttsd.bridge.routes import health

    async def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(health, "daemon_state", broken)
    r = http.get("/health", headers={"x-request-id": "oops-1"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "oops-1"
    assert r.json()["error"]["code"] == "internal" and "oops-1" in r.json()["error"]["message"]


# --- priority realtime is for calls, or for API-key holders (issue 21 item 15) -------------


def test_plain_http_cannot_claim_realtime(http, daemon):
    r = http.post("/v1/audio/speech", json={"input": "Me first.", "voice": "ryan", "response_format": "pcm",
                                            "priority": "realtime"})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "forbidden" and r.json()["error"]["param"] == "priority"
    assert not any(m == "tts.synthesize" for m, _ in daemon.requests)
    r = http.post("/v1/audio/speech", json={"input": "Normal.", "voice": "ryan", "response_format": "pcm",
                                            "priority": "normal"})
    assert r.status_code == 200 and daemon.last()["priority"] == "normal"


def test_with_an_api_key_http_may_ask_for_realtime(daemon, tmp_path):
    app = create_app(BridgeConfig(runtime_dir=str(tmp_path / "rt"), api_key="k3y"))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.post("/v1/audio/speech", headers={"authorization": "Bearer k3y"},
                   json={"input": "Me first.", "voice": "ryan", "response_format": "pcm", "priority": "realtime"})
    assert r.status_code == 200, r.text
    assert daemon.last()["priority"] == "realtime"


def test_websocket_calls_are_realtime(http, daemon):
    ws_turn(http, "Hello there.")
    assert daemon.last()["priority"] == "realtime"


def test_an_error_mid_stream_is_an_sse_error_event(http, daemon):
    """Once audio has gone out, the status is sent: SSE can still say what went wrong (a
    client the daemon cut off as stalled learns ``client_stalled``, issue 21 item 15)."""
    daemon.fail_after_audio["Cut off."] = "client_stalled"
    r = http.post("/v1/audio/speech", json={"input": "Cut off.", "voice": "ryan", "response_format": "pcm",
                                            "stream_format": "sse"})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta", "speech.audio.delta", "error"]
    assert events[-1]["error"]["code"] == "client_stalled" and events[-1]["error"]["message"]


# --- POST /v1/audio/warmup (issue 20 item 5) -------------------------------------------------


def test_warmup_maps_openai_names_like_speech(http, daemon, sdk):
    r = sdk.post("/audio/warmup", body={"model": "tts-1-hd-es", "voice": "alloy"}, cast_to=object)
    assert r["object"] == "audio.warmup" and r["ready"] is True and r["model"] == "custom_voice"
    assert daemon.last("tts.warmup") == {"voice": "vivian", "language": "spanish"}
    sdk.post("/audio/warmup", body={"voice": {"id": "narrator"}, "model": "base"}, cast_to=object)
    assert daemon.last("tts.warmup") == {"voice": "narrator", "model": "base", "language": "auto"}
    bad = http.post("/v1/audio/warmup", json={"input": "Hello."})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"


def test_readme_maps_every_openai_voice_as_the_bridge_does():
    """The "Moving off OpenAI's TTS" table says what each of OpenAI's 13 voices becomes."""
    from pathlib import Path

    from qwen3ttsd.bridge.openai_compat import VOICE_MAP

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `voice`: alloy"))
    mapped = dict(re.findall(r"([a-z/]+) -> ([a-z_]+)", row))
    assert {name: speaker for names, speaker in mapped.items() for name in names.split("/")} == VOICE_MAP
    assert len(VOICE_MAP) == 13


def test_websocket_takes_openais_voice_id_object(http, daemon):
    """``voice: {"id": ...}`` (a saved or designed voice, as OpenAI names custom voices) works
    on the call WebSocket as on /v1/audio/speech."""
    with http.websocket_connect("ws://127.0.0.1/v1/audio/speech/stream") as ws:
        ws.receive_json()  # session
        ws.send_json({"type": "session.update", "voice": {"id": "captain"}, "audio_header": False})
        ws.send_json({"type": "text", "text": "Ahoy."})
        ws.send_json({"type": "flush"})
        while (ev := ws.receive()).get("text") is None or json.loads(ev["text"])["type"] not in ("flushed", "error"):
            pass
        assert json.loads(ev["text"])["type"] == "flushed", ev
    assert daemon.last()["voice"] == "captain"
