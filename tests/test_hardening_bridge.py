"""The hardening review's findings against the real bridge (uvicorn, --activate) and the
real daemon (tiny models), each reproduced as the attacker or careless client did it."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest
import soundfile as sf
import websockets
from hypothesis import HealthCheck, given, settings, strategies as st

from .helpers import pid_alive, wait_for
from .test_audio import _Canary, hostile_uploads
from .test_bridge import Bridge, _ref_wav

pytestmark = pytest.mark.slow

SPEECH = "/v1/audio/speech"


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])


@pytest.fixture(scope="module")
def bridge(tiny_models, tmp_path_factory):
    b = Bridge(tmp_path_factory.mktemp("hbridge"), tiny_models["custom_voice"].parent,
               extra_env={"QWEN3TTSD_STALL_TIMEOUT": "3"})
    yield b
    b.stop()


def ws_url(b: Bridge) -> str:
    return b.url.replace("http", "ws") + "/v1/audio/speech/stream"


# --- the daemon must always be able to exit -------------------------------------------------


def test_websocket_hang_ups_at_any_moment_let_the_daemon_idle_out(tiny_models, tmp_path):
    idle = 2.0
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent, idle=idle)
    try:
        async def hang_up(after: str) -> None:
            async with websockets.connect(ws_url(b)) as ws:
                if after == "connect":
                    return
                await ws.recv()  # session
                if after == "session":
                    return
                await ws.send(json.dumps({"type": "session.update", "voice": "ryan"}))
                if after == "update":
                    return
                while json.loads(await ws.recv())["type"] != "warm":
                    pass
                if after == "warm":
                    return
                await ws.send(json.dumps({"type": "text", "text": "Speak a little, then be cut off. " * 3}))
                await ws.send(json.dumps({"type": "flush"}))
                while not isinstance(await ws.recv(), bytes):
                    pass  # mid-audio

        async def all_calls() -> None:
            moments = ["connect", "session", "update", "warm", "audio"]
            await asyncio.gather(*(hang_up(moments[i % len(moments)]) for i in range(30)))

        asyncio.run(all_calls())
        gone = time.monotonic()
        wait_for(lambda: b.health()["daemon"]["pid"] is None, 30, what="idle exit after the calls")
        assert time.monotonic() - gone < idle + 1 + 4  # + the cut-off streams' last frames
        spawns = b.health()["daemon"]["spawns"]
        time.sleep(idle + 6)  # nothing left behind reconnects (old keep-warm tasks did, every 6.5 s)
        h = b.health()["daemon"]
        assert h["pid"] is None and h["spawns"] == spawns
    finally:
        b.stop()


def test_unread_http_stream_is_cut_off_and_bridge_memory_stays_bounded(bridge):
    """A client that never reads its audio: the bridge stops reading the daemon (no
    unbounded buffer), the daemon cuts the stream off after stall_timeout."""
    before = rss_kb(bridge.proc.pid)
    s = socket.create_connection(("127.0.0.1", bridge.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = json.dumps({"input": "Nobody reads this. " * 30, "voice": "ryan", "response_format": "f32",
                       "sample_rate": 48000, "max_frames": 3000, "chunk_frames": 8}).encode()
    s.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    peak = before

    def cut_off() -> bool:
        nonlocal peak
        peak = max(peak, rss_kb(bridge.proc.pid))
        return bridge.admin("admin.status")["served"] >= 0 and bridge.admin("admin.status")["active_streams"] == 0

    time.sleep(1)
    wait_for(cut_off, 120, interval=0.3, what="the daemon cutting the unread stream off (stall_timeout 3 s)")
    assert peak - before < 8 * 1024, (before, peak)
    s.close()


def test_oversized_bodies_are_refused_before_they_are_read(bridge):
    before = rss_kb(bridge.proc.pid)
    big = 50 * 1024 * 1024
    s = socket.create_connection(("127.0.0.1", bridge.port))
    s.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(big).encode() + b"\r\n\r\n" + b"[" * 65536)
    s.settimeout(10)
    head = s.recv(65536)
    assert head.startswith(b"HTTP/1.1 413"), head[:100]
    s.close()

    def chunked_multipart():
        yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        for _ in range(50):
            yield b"\0" * (1024 * 1024)

    r = httpx.post(bridge.url + "/v1/audio/voices", content=chunked_multipart(), timeout=60,
                   headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert rss_kb(bridge.proc.pid) - before < 16 * 1024


# --- bad input is a 4xx, never a 500 --------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b'{"input": "x", "sample_rate": NaN}', b'{"input": "x", "seed": Infinity}',
    b'{"input": "x", "max_frames": -Infinity}', b'{"input": "x", "speed": 1e999}',
    b'{"input": "\\ud800 lone"}', b"[" * 100_000, b'{"input": "x", "seed": ' + b"9" * 5000 + b"}",
    b'{"input": "x", "ref_audio": "aGVsbG8="}', b'{"input": "x", "sample_rate": 16000.5}',
])
def test_hostile_json_is_bad_request(bridge, raw):
    r = httpx.post(bridge.url + SPEECH, content=raw, timeout=30, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "bad_request"


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
FIELDS = ["model", "voice", "response_format", "speed", "instructions", "stream_format", "language", "seed",
          "sample_rate", "temperature", "top_k", "top_p", "repetition_penalty", "priority", "chunk_frames",
          "first_chunk_frames", "normalize", "max_frames", "input"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(FIELDS), value=VALUES)
def test_fuzz_speech_fields_never_500(bridge, field, value):
    body = {"input": "Fuzz.", "voice": "ryan", "response_format": "pcm", "max_frames": 2, field: value}
    if field == "max_frames" and isinstance(value, int) and not isinstance(value, bool) and value > 4:
        body["max_frames"] = 4  # keep valid runs short
    r = httpx.post(bridge.url + SPEECH, json=body, timeout=60)
    assert r.status_code < 500, (field, value, r.text)
    if r.status_code >= 400:
        assert r.json()["error"]["code"] in ("bad_request", "not_found", "payload_too_large", "forbidden")


def test_sse_content_type_has_no_rate_parameter(bridge):
    r = httpx.post(bridge.url + SPEECH, timeout=60, json={"input": "SSE.", "voice": "ryan", "response_format": "pcm",
                                                          "stream_format": "sse", "max_frames": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream; charset=utf-8"


def test_hls_playlist_upload_fetches_nothing(bridge, tmp_path):
    canary = _Canary(_ref_wav())
    try:
        for name, data in hostile_uploads(canary.url, str(tmp_path / "x.wav")).items():
            r = httpx.post(bridge.url + "/v1/audio/voices", timeout=60,
                           files={"file": (f"{name}.m3u8", data, "audio/x-mpegurl")},
                           data={"name": f"ssrf-{name}", "consent": "test"})
            assert r.status_code == 400, (name, r.text)
        assert canary.hits == []
    finally:
        canary.close()


# --- browsers on other sites ----------------------------------------------------------------


def test_cross_origin_and_rebound_host_requests_are_refused(bridge):
    evil = {"origin": "http://evil.example"}
    body = json.dumps({"input": "x", "voice": "ryan", "max_frames": 2})
    r = httpx.post(bridge.url + SPEECH, content=body, headers={**evil, "content-type": "text/plain"}, timeout=30)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = httpx.post(bridge.url + "/v1/audio/voices", headers=evil, timeout=30,
                   files={"file": ("a.wav", _ref_wav(), "audio/wav")}, data={"name": "planted", "consent": "x"})
    assert r.status_code == 403
    assert "planted" not in httpx.get(bridge.url + "/v1/audio/voices").text
    r = httpx.get(bridge.url + "/v1/models", headers={"host": "attacker.example:%d" % bridge.port}, timeout=30)
    assert r.status_code == 403  # DNS rebinding: the browser sends the attacker's name

    async def ws(origin: str) -> str:
        try:
            async with websockets.connect(ws_url(bridge), origin=origin) as c:
                return json.loads(await c.recv())["type"]
        except websockets.exceptions.InvalidStatus as e:
            return str(e.response.status_code)

    assert asyncio.run(ws("http://evil.example")) == "403"
    assert asyncio.run(ws(f"http://127.0.0.1:{bridge.port}")) == "session"  # same origin: fine
    same = {"origin": f"http://127.0.0.1:{bridge.port}"}
    r = httpx.post(bridge.url + SPEECH, headers=same, timeout=60,
                   json={"input": "Same origin.", "voice": "ryan", "response_format": "pcm", "max_frames": 2})
    assert r.status_code == 200


def test_api_key_401_bearer_case_insensitive_and_allowed_origin(tiny_models, tmp_path):
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent, args=["--api-key", "s3cret"],
               extra_env={"QWEN3TTS_BRIDGE_ALLOWED_ORIGINS": "https://app.example"})
    try:
        c = openai.OpenAI(base_url=b.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            c.models.list()
        r = httpx.get(b.url + "/v1/models", timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"].lower().startswith("bearer")
        assert r.json()["error"]["code"] == "unauthorized"
        r = httpx.get(b.url + "/v1/models", headers={"authorization": "bearer s3cret"}, timeout=60)
        assert r.status_code == 200
        r = httpx.post(b.url + SPEECH, timeout=60, headers={"authorization": "Bearer s3cret",
                                                            "origin": "https://app.example"},
                       json={"input": "Allowed.", "voice": "ryan", "response_format": "pcm", "max_frames": 2})
        assert r.status_code == 200
        assert httpx.get(b.url + "/health").status_code == 200  # health needs no key
    finally:
        b.stop()


# --- recovery ------------------------------------------------------------------------------


def test_request_right_after_a_daemon_crash_is_served(tiny_models, tmp_path):
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent)
    try:
        body = {"input": "Hello.", "voice": "ryan", "response_format": "pcm", "max_frames": 2}
        assert httpx.post(b.url + SPEECH, json=body, timeout=120).status_code == 200
        pid = b.health()["daemon"]["pid"]
        os.kill(pid, signal.SIGKILL)
        r = httpx.post(b.url + SPEECH, json=body, timeout=120)
        assert r.status_code == 200 and len(r.content) == 2 * 1920 * 2, r.text
        assert b.health()["daemon"]["pid"] not in (None, pid)
    finally:
        b.stop()


def test_killed_bridge_comes_back_and_its_daemon_does_not_linger(tiny_models, tmp_path):
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent)
    body = {"input": "Hello.", "voice": "ryan", "response_format": "pcm", "max_frames": 2}
    assert httpx.post(b.url + SPEECH, json=body, timeout=120).status_code == 200
    daemon = b.health()["daemon"]["pid"]
    b.proc.kill()  # no cleanup at all
    b.proc.wait()
    b.log.close()
    wait_for(lambda: not pid_alive(daemon), 30, what="orphan daemon exit")
    t0 = time.monotonic()
    b2 = Bridge(tmp_path, tiny_models["custom_voice"].parent)  # same runtime dir, same sockets
    try:
        assert time.monotonic() - t0 < 15
        assert httpx.post(b2.url + SPEECH, json=body, timeout=120).status_code == 200
        notify = sorted(p.name for p in (tmp_path / "rt").glob(".notify-*"))
        assert notify == [f".notify-{b2.proc.pid}"]  # the dead bridge's one is cleaned up
    finally:
        b2.stop()


def test_activator_retires_a_daemon_it_did_not_start(tiny_models, tmp_path):
    """A daemon still holding the sockets (no parent-death signal reached it): the new
    bridge asks it to leave over the admin socket, then takes the sockets over."""
    from .helpers import daemon_env, start_daemon

    rt = tmp_path / "rt"
    env = daemon_env(tiny_models["custom_voice"], tmp_path / "state", idle_timeout=-1)
    stray = start_daemon(rt, env)
    try:
        b = Bridge(tmp_path, tiny_models["custom_voice"].parent)
        try:
            stray.wait(30)
            body = {"input": "Hi.", "voice": "ryan", "response_format": "pcm", "max_frames": 2}
            assert httpx.post(b.url + SPEECH, json=body, timeout=120).status_code == 200
        finally:
            b.stop()
    finally:
        if stray.poll() is None:
            stray.kill()


@pytest.mark.parametrize("fmt", ["mp3", "flac", "opus", "wav"])
def test_every_format_has_the_same_length_for_every_reader(bridge, fmt):
    r = httpx.post(bridge.url + SPEECH, timeout=120, json={"input": "Length check. And a second sentence.",
                                                           "voice": "nova", "response_format": fmt,
                                                           "max_frames": 20})
    assert r.status_code == 200
    ff = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", "24000",
                         "pipe:1"], input=r.content, capture_output=True, check=True).stdout
    n_ff = len(ff) // 4
    wav, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    assert sr == 24000
    want = 2 * 20 * 1920
    assert abs(n_ff - want) <= 1920 + 1152 and abs(len(wav) - n_ff) <= 1152, (len(wav), n_ff, want)
    assert not math.isnan(float(wav.sum()))


BROWSER_DECODE = """async ([url, fmt]) => {
  const r = await fetch(url, {method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({input: "Length check. And a second sentence.", voice: "nova",
                          response_format: fmt, max_frames: 20})});
  const buf = await r.arrayBuffer();
  const ctx = new OfflineAudioContext(1, 1, 24000);
  try { const audio = await ctx.decodeAudioData(buf); return audio.duration; }
  catch (e) { return "error: " + e; }
}"""


def test_chromium_decodes_every_format_to_the_same_length(bridge):
    """What a browser (the web page, <audio>) makes of each format's bytes."""
    from playwright.sync_api import sync_playwright

    want = 2 * 20 * 1920 / 24000
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(bridge.url + "/health")
            got = {fmt: page.evaluate(BROWSER_DECODE, [bridge.url + SPEECH, fmt])
                   for fmt in ("mp3", "flac", "opus", "wav", "aac")}
        finally:
            browser.close()
    for fmt, duration in got.items():
        assert isinstance(duration, float), (fmt, duration)
        assert abs(duration - want) <= 0.13, (fmt, duration, want)  # within ~1.5 frames (codec priming)


WS_FIELDS = ["voice", "language", "format", "sample_rate", "instructions", "speed", "seed", "model",
             "audio_header", "temperature", "top_k", "top_p", "max_frames"]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(WS_FIELDS), value=VALUES)
def test_fuzz_websocket_session_fields_never_break_the_call(bridge, field, value):
    async def call() -> list[str]:
        kinds = []
        async with websockets.connect(ws_url(bridge)) as ws:
            await ws.recv()  # session
            update = {"type": "session.update", "voice": "ryan", "max_frames": 2, field: value}
            if field == "max_frames":
                update["max_frames"] = value if not isinstance(value, int) or isinstance(value, bool) else 2
            await ws.send(json.dumps(update))
            await ws.send(json.dumps({"type": "text", "text": "Hi."}))
            await ws.send(json.dumps({"type": "flush"}))
            while True:
                m = await asyncio.wait_for(ws.recv(), 120)
                if isinstance(m, bytes):
                    continue
                kinds.append(json.loads(m)["type"])
                if kinds[-1] in ("flushed",):
                    return kinds
    kinds = asyncio.run(call())  # a crashed handler would close the socket instead
    errors = [k for k in kinds if k == "error"]
    assert kinds[-1] == "flushed" and len(errors) <= 2, kinds
