"""The real bridge (uvicorn, --activate) + the real daemon (tiny models), used as clients would:
the official ``openai`` SDK, plain HTTP, and the ``websockets`` client."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
import websockets

from qwen3ttsd.client import Client
from qwen3ttsd.testing import free_port

from .helpers import PY, daemon_env, wait_for

pytestmark = pytest.mark.slow


class Bridge:
    def __init__(self, root: Path, models_dir: Path, idle: float = 60, extra_env: dict | None = None,
                 args: list[str] | None = None, port: int | None = None) -> None:
        self.rt = root / "rt"
        self.port = port or free_port()   # a given port: a restart on the same address
        env = daemon_env("", root / "state", idle_timeout=idle)
        env.pop("QWEN3TTSD_MODEL")
        env["QWEN3TTSD_MODELS_DIR"] = str(models_dir)
        env["QWEN3TTSD_DEFAULT_MODEL"] = "custom_voice"
        env["QWEN3TTSD_MAX_LOADED_MODELS"] = "3"
        env.update(extra_env or {})
        self.log = open(root / "bridge.log", "wb")  # noqa: SIM115 - the bridge process writes it until stop()
        self.proc = subprocess.Popen([PY, "-m", "qwen3ttsd.bridge.main", "--activate", "--runtime-dir",
                                      str(self.rt), "--port", str(self.port), *(args or [])],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self._up, 30, what="bridge http")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(Path(self.log.name).read_text()[-3000:])
        try:
            return httpx.get(self.url + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5).json()

    def admin(self, method: str, params: dict | None = None):
        with Client(str(self.rt / "admin.sock")) as c:
            return c.call(method, params or {})

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=300)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def bridge(tiny_models, tmp_path_factory):
    b = Bridge(tmp_path_factory.mktemp("bridge"), tiny_models["custom_voice"].parent)
    yield b
    b.stop()


def _ref_wav(seconds: float = 2.5) -> bytes:
    sr = 24000
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# --- footprint --------------------------------------------------------------------------


def test_health_and_metrics_do_not_wake_the_daemon(bridge):
    # runs first in this module: nothing has talked to the daemon yet
    h = bridge.health()
    assert h["status"] == "ok" and h["daemon"]["spawns"] == 0 and h["daemon"]["pid"] is None
    m = httpx.get(bridge.url + "/metrics").text
    assert "qwen3tts_daemon_spawns_total 0" in m
    assert bridge.health()["daemon"]["spawns"] == 0


def test_bridge_never_loads_numpy_torch_soundfile(bridge):
    r = bridge.openai().audio.speech.create(model="tts-1", voice="alloy", input="Footprint.",
                                            response_format="wav", extra_body={"max_frames": 2})
    assert r.content[:4] == b"RIFF"
    maps = Path(f"/proc/{bridge.proc.pid}/maps").read_text()
    for lib in ("numpy", "torch", "soundfile", "libsndfile", "scipy"):
        assert lib not in maps, lib
    rss_kb = int(next(line for line in Path(f"/proc/{bridge.proc.pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS")).split()[1])
    assert rss_kb < 40 * 1024  # the budget; bench/bench_bridge.py reports the exact figure


# --- OpenAI SDK ---------------------------------------------------------------------------


def test_openai_sdk_create_streaming_and_sse(bridge):
    client = bridge.openai()
    r = client.audio.speech.create(model="tts-1", voice="echo", input="Hello there. Second sentence.",
                                   response_format="wav", extra_body={"seed": 5, "max_frames": 6})
    d, sr = sf.read(io.BytesIO(r.content))
    assert sr == 24000 and len(d) == 2 * 6 * 1920  # two sentences, 6 frames each

    t0 = time.monotonic()
    chunks, first = [], None
    with client.audio.speech.with_streaming_response.create(
            model="tts-1-en", voice="ash", input="Streamed as chunked transfer.", response_format="pcm",
            extra_body={"max_frames": 30, "chunk_frames": 2}) as resp:
        assert resp.headers["content-type"].startswith("audio/pcm")
        assert resp.headers.get("transfer-encoding") == "chunked"
        for ch in resp.iter_bytes():
            if first is None:
                first = time.monotonic() - t0
            chunks.append(ch)
    total = time.monotonic() - t0
    assert sum(map(len, chunks)) == 30 * 1920 * 2
    assert first < total / 2  # first bytes long before the end

    r = client.audio.speech.create(model="tts-1", voice="alloy", input="Server sent events.",
                                   response_format="pcm", stream_format="sse", extra_body={"max_frames": 4})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["output_tokens"] == 4
    import base64

    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert len(audio) == 4 * 1920 * 2


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac"])
def test_openai_formats_decode(bridge, fmt):
    r = bridge.openai().audio.speech.create(model="tts-1", voice="nova", input="Format check.",
                                            response_format=fmt, extra_body={"max_frames": 10})
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", "24000",
                          "pipe:1"], input=r.content, capture_output=True)
    assert out.returncode == 0, out.stderr
    assert abs(len(out.stdout) / 4 - 10 * 1920) <= 1920 + 1024  # within one frame + codec priming


def test_openai_errors_are_json_4xx(bridge):
    client = bridge.openai()
    with pytest.raises(openai.BadRequestError) as ei:
        client.audio.speech.create(model="tts-1", voice="no-such-voice", input="x")
    assert ei.value.body["code"] == "bad_request"
    for body, status in [({"input": "", "voice": "alloy"}, 400), ({"input": "x", "speed": 9}, 400),
                         ({"input": "x", "response_format": "wma"}, 400), ({"input": "x", "model": "tts-1-xx"}, 400),
                         ({"input": "x", "model": "nope"}, 404), ({"input": "x" * 30000}, 413)]:
        r = httpx.post(bridge.url + "/v1/audio/speech", json=body, timeout=30)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/json" and "message" in r.json()["error"]
    r = httpx.post(bridge.url + "/v1/audio/speech", content=b"{not json", timeout=30)
    assert r.status_code == 400
    models = client.models.list()
    ids = {m.id for m in models.data}
    assert {"tts-1", "custom_voice", "base", "voice_design"} <= ids


def test_instructions_route_to_voice_design(bridge):
    r = httpx.post(bridge.url + "/v1/audio/speech", json={
        "model": "voice_design", "input": "Designed voice.", "voice": "x", "instructions": "a deep calm voice",
        "response_format": "pcm", "max_frames": 3}, timeout=120)
    assert r.status_code == 200 and len(r.content) == 3 * 1920 * 2


# --- concurrency and cancellation ---------------------------------------------------------


def test_eight_concurrent_seeded_requests_match_solo_runs(bridge):
    """A seeded request speaks the same beside seven others as alone - with the CPU
    default, int8, too (each seeded row's activations are quantized on their own)."""

    def run(i: int) -> bytes:
        r = httpx.post(bridge.url + "/v1/audio/speech", timeout=300, json={
            "model": "tts-1", "voice": ["alloy", "echo", "ash", "nova"][i % 4], "response_format": "pcm",
            "input": f"Request number {i}. It has two sentences.", "seed": 100 + i, "max_frames": 5})
        assert r.status_code == 200, r.text
        return r.content

    solo = [run(i) for i in range(8)]
    with ThreadPoolExecutor(8) as ex:
        together = list(ex.map(run, range(8)))
    assert all(len(s) == 2 * 5 * 1920 * 2 for s in solo)
    # Same codes, same audio: batched codec decode (the default) rounds in float32 a little
    # differently with other streams in the batch - at most 1 LSB of int16 (-90 dBFS).
    # QWEN3TTSD_BATCH_DECODE=0 makes it byte-identical (tests/test_engine_batched.py pins that).
    for s, t in zip(solo, together):
        diff = np.abs(np.frombuffer(s, np.int16).astype(int) - np.frombuffer(t, np.int16).astype(int))
        assert diff.max() <= 1, diff.max()
    assert len(set(solo)) == 8


def test_client_disconnect_cancels_generation(bridge):
    served_before = bridge.admin("admin.status")["served"]
    with httpx.stream("POST", bridge.url + "/v1/audio/speech", timeout=120, json={
            "input": "A very long answer nobody will hear.", "voice": "ryan", "response_format": "pcm",
            "max_frames": 2000, "chunk_frames": 1}) as r:
        it = r.iter_bytes()
        next(it)
        next(it)
    # the daemon notices within a frame or two and frees the GPU
    wait_for(lambda: bridge.admin("admin.status")["active_streams"] == 0, 20, what="daemon stream cancelled")
    st = bridge.admin("admin.status")
    assert st["served"] == served_before  # it did not run to completion
    t0 = time.monotonic()
    r = httpx.post(bridge.url + "/v1/audio/speech", json={"input": "Next.", "voice": "ryan",
                                                          "response_format": "pcm", "max_frames": 2}, timeout=60)
    assert r.status_code == 200 and time.monotonic() - t0 < 10


# --- voices -----------------------------------------------------------------------------


def test_voice_upload_clone_and_delete(bridge):
    files = {"file": ("ref.wav", _ref_wav(), "audio/wav")}
    r = httpx.post(bridge.url + "/v1/audio/voices", files=files,
                   data={"name": "narrator", "consent": "speaker agreed on 2026-11-24", "ref_text": "Hello there."},
                   timeout=120)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "narrator" and 1.0 < r.json()["duration_s"] <= 15
    listed = httpx.get(bridge.url + "/v1/audio/voices").json()["data"]
    assert any(v["id"] == "narrator" and v["type"] == "audio_sample" for v in listed)
    r = bridge.openai().audio.speech.create(model="tts-1", voice="narrator", input="Cloned speech.",
                                            response_format="pcm", extra_body={"max_frames": 4})
    assert len(r.content) == 4 * 1920 * 2
    # one-shot clone with an uploaded reference
    r = httpx.post(bridge.url + "/v1/audio/speech/clone", files={"file": ("r.wav", _ref_wav(3), "audio/wav")},
                   data={"input": "One shot.", "ref_text": "Hi.", "response_format": "wav", "max_frames": "3"},
                   timeout=120)
    assert r.status_code == 200, r.text
    assert len(sf.read(io.BytesIO(r.content))[0]) == 3 * 1920
    assert httpx.delete(bridge.url + "/v1/audio/voices/narrator").status_code == 200
    assert httpx.delete(bridge.url + "/v1/audio/voices/narrator").status_code == 404
    r = httpx.post(bridge.url + "/v1/audio/speech", json={"input": "x", "voice": "narrator"}, timeout=30)
    assert r.status_code == 400


def test_voice_upload_rejections(bridge):
    url = bridge.url + "/v1/audio/voices"
    ok = {"name": "v1", "consent": "yes"}
    r = httpx.post(url, files={"file": ("x.wav", b"this is not audio at all" * 10, "audio/wav")}, data=ok, timeout=60)
    assert r.status_code == 400 and "audio" in r.json()["error"]["message"]
    r = httpx.post(url, files={"file": ("x.wav", _ref_wav(), "audio/wav")}, data={"name": "v1"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "consent"
    silent = io.BytesIO()
    sf.write(silent, np.zeros(48000, np.float32), 24000, format="WAV")
    r = httpx.post(url, files={"file": ("s.wav", silent.getvalue(), "audio/wav")}, data=ok, timeout=60)
    assert r.status_code == 400 and "silent" in r.json()["error"]["message"]
    r = httpx.post(url, files={"file": ("x.wav", _ref_wav(0.5), "audio/wav")}, data=ok, timeout=60)
    assert r.status_code == 400
    big = b"\0" * (11 * 1024 * 1024)
    r = httpx.post(url, files={"file": ("big.wav", big, "audio/wav")}, data=ok, timeout=60)
    assert r.status_code == 413
    r = httpx.post(url, files={"file": ("x.wav", _ref_wav(), "audio/wav")}, data={"name": "../etc", "consent": "y"},
                   timeout=60)
    assert r.status_code == 400


# --- WebSocket phone streaming ----------------------------------------------------------


class _WS:
    """A websockets connection that sets aside the asynchronous "warm" notices."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.warm: list[dict] = []

    async def send(self, m) -> None:
        await self.ws.send(m)

    async def recv(self):
        while True:
            m = await self.ws.recv()
            if isinstance(m, str) and json.loads(m).get("type") == "warm":
                self.warm.append(json.loads(m))
                continue
            return m


def test_websocket_phone_call_incremental_text_and_barge_in(bridge):
    async def call():
        async with websockets.connect(bridge.url.replace("http", "ws") + "/v1/audio/speech/stream") as raw:
            ws = _WS(raw)
            assert json.loads(await ws.recv())["type"] == "session"
            await ws.send(json.dumps({"type": "session.update", "voice": "ryan", "format": "mulaw",
                                      "text_mode": "clause", "language": "en"}))
            sess = json.loads(await ws.recv())["session"]
            assert sess["sample_rate"] == 8000 and sess["language"] == "english"
            t0 = time.monotonic()
            for d in ["Hello the", "re, thanks for cal", "ling. How can I help you today?"]:
                await ws.send(json.dumps({"type": "text", "text": d}))
                await asyncio.sleep(0.05)
            first_seg = json.loads(await ws.recv())
            assert first_seg == {"type": "segment", "index": 0, "text": "Hello there,"}  # first clause
            await ws.send(json.dumps({"type": "flush"}))
            audio, stamps, msgs, first = bytearray(), [], [], None
            while True:
                m = await ws.recv()
                if isinstance(m, bytes):
                    first = first or time.monotonic() - t0
                    seq, ts = struct.unpack(">II", m[:8])
                    stamps.append((seq, ts, len(m) - 8))
                    audio += m[8:]
                else:
                    msgs.append(json.loads(m))
                    if msgs[-1]["type"] == "flushed":
                        break
            # timestamps are the audio position of each frame at 8 kHz mu-law (1 byte/sample)
            pos = 0
            for i, (seq, ts, n) in enumerate(stamps):
                assert seq == i and ts == pos * 1000 // 8000
                pos += n
            assert msgs[-1]["sent_ms"] == len(audio) * 1000 // 8000
            assert [m["index"] for m in msgs if m["type"] == "segment.done"] == [0, 1, 2]

            # barge-in: cancel after a few frames; audio stops, server says how much was sent
            await ws.send(json.dumps({"type": "text", "text": "This long answer gets interrupted. " * 4}))
            await ws.send(json.dumps({"type": "flush"}))
            got = 0
            while True:
                m = await ws.recv()
                if isinstance(m, bytes):
                    got += len(m) - 8
                    if got >= 3 * 640:
                        await ws.send(json.dumps({"type": "cancel"}))
                        break
            after = 0
            while True:
                m = await ws.recv()
                if isinstance(m, bytes):
                    after += len(m) - 8
                    continue
                j = json.loads(m)
                if j["type"] == "cancelled":
                    break
            # only chunks already sent before the server read "cancel" (2 frames = 1280 bytes each)
            assert after <= 2 * 1280
            assert j["sent_bytes"] == len(audio) + got + after  # it reports exactly what it sent
            assert j["sent_ms"] == j["sent_bytes"] * 1000 // 8000
            # nothing of the cancelled answer follows; the session keeps working
            await ws.send(json.dumps({"type": "text", "text": "Okay."}))
            await ws.send(json.dumps({"type": "flush"}))
            m = await ws.recv()
            assert not isinstance(m, bytes) and json.loads(m)["type"] == "segment"
            while True:
                m = await ws.recv()
                if not isinstance(m, bytes) and json.loads(m)["type"] == "flushed":
                    break
            await ws.send(json.dumps({"type": "bogus"}))
            assert json.loads(await ws.recv())["type"] == "error"
            assert ws.warm and ws.warm[-1]["model"] == "custom_voice"
            return first

    first = asyncio.run(call())
    assert first is not None
    wait_for(lambda: bridge.admin("admin.status")["active_streams"] == 0, 30, what="streams drained")


def test_open_call_warms_the_model_and_keeps_the_daemon_alive(tiny_models, tmp_path):
    """A phone call connects: the model loads before any text arrives, and a quiet call
    longer than the idle timeout does not let the daemon exit (no cold start mid-call)."""
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent, idle=2)
    try:
        async def call():
            async with websockets.connect(b.url.replace("http", "ws") + "/v1/audio/speech/stream") as raw:
                ws = _WS(raw)
                await ws.recv()  # session
                warm = json.loads(await asyncio.wait_for(raw.recv(), 60))  # before any text is sent
                assert warm["type"] == "warm"
                ws.warm.append(warm)
                assert ws.warm[0]["model"] == "custom_voice" and ws.warm[0]["was_loaded"] is False
                await asyncio.sleep(5)  # silence on the line, longer than idle_timeout
                t0 = time.monotonic()
                await ws.send(json.dumps({"type": "text", "text": "Still there?"}))
                await ws.send(json.dumps({"type": "flush"}))
                first = None
                while True:
                    m = await ws.recv()
                    if isinstance(m, bytes):
                        first = first or time.monotonic() - t0
                    elif json.loads(m)["type"] == "flushed":
                        return first

        first = asyncio.run(call())
        assert first < 1.0  # warm: no spawn, no model load
        h = b.health()["daemon"]
        assert h["spawns"] == 1 and h["pid"] is not None
        # call over: the daemon goes idle and exits
        wait_for(lambda: b.health()["daemon"]["pid"] is None, 30, what="idle exit after the call")
    finally:
        b.stop()


# --- activator ------------------------------------------------------------------------


def test_daemon_that_cannot_start_gives_503(tiny_models, tmp_path):
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent, args=["--daemon-command", "/bin/false"])
    try:
        r = httpx.post(b.url + "/v1/audio/speech", json={"input": "x"}, timeout=60)
        assert r.status_code == 503
        assert b.health()["daemon"]["failures"] >= 1
    finally:
        b.stop()


def test_daemon_with_a_bad_setting_tells_the_caller_and_health_why(tiny_models, tmp_path):
    """A setting the daemon cannot run with (here an upstream with ``cap=0``): the caller gets
    the daemon's own words (not "daemon closed the connection"), so does ``/health`` (503,
    ``status: error``), and every later request while the activator backs off."""
    bad = {"QWEN3TTSD_ENGINE": "upstream", "QWEN3TTSD_UPSTREAM": "unix:///nowhere/tts.sock?cap=0"}
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent, extra_env=bad)
    try:
        for _ in range(2):  # the daemon's own refusal, then the activator's while it backs off
            r = httpx.post(b.url + "/v1/audio/speech", json={"input": "x"}, timeout=60)
            assert r.status_code == 503, r.text
            assert "cap=N" in r.json()["error"]["message"] and "closed the connection" not in r.text
        h = httpx.get(b.url + "/health", timeout=5)
        assert h.status_code == 503 and h.json()["status"] == "error" and "cap=N" in h.json()["error"]
        log = (tmp_path / "bridge.log").read_text()
        assert "bad configuration" in log
    finally:
        b.stop()


def test_health_reads_the_daemons_live_state_and_never_wakes_it(tiny_models, tmp_path):
    """A model loaded by a request (no warm-up, no admin.load) shows on /health at once, as
    /v1/models has it; after the idle exit /health gives the last state, marked cached."""
    b = Bridge(tmp_path, tiny_models["custom_voice"].parent, idle=2)
    try:
        assert b.health()["daemon"]["source"] == "cached"
        r = httpx.post(b.url + "/v1/audio/speech", timeout=120,
                       json={"input": "Load me.", "voice": "ryan", "response_format": "pcm", "max_frames": 2})
        assert r.status_code == 200
        d = b.health()["daemon"]
        assert d["source"] == "live" and d["status"].startswith("ready: custom_voice"), d
        models = {m["id"]: m for m in httpx.get(b.url + "/v1/models", timeout=30).json()["data"]}
        assert models["custom_voice"]["loaded"] is True
        wait_for(lambda: b.health()["daemon"]["pid"] is None, 30, what="idle exit")
        d = b.health()["daemon"]
        assert d["source"] == "cached" and d["last_status"].startswith("ready: custom_voice"), d
        time.sleep(1)
        assert b.health()["daemon"]["spawns"] == 1  # asking never started it again
    finally:
        b.stop()


def test_a_voice_upload_replaces_a_saved_voice_only_when_asked(bridge):
    """``replace`` on the multipart upload (the socket's voices.add has it; the route ignored it:
    a user could only delete and upload again)."""
    url = bridge.url + "/v1/audio/voices"
    form = {"name": "swap", "consent": "speaker agreed", "ref_text": "Hello there."}

    def upload(seconds: float, **extra: str) -> httpx.Response:
        files = {"file": ("ref.wav", _ref_wav(seconds), "audio/wav")}
        return httpx.post(url, files=files, data={**form, **extra}, timeout=120)

    assert upload(2).status_code == 201
    assert upload(3).status_code == 409
    r = upload(3, replace="true")
    assert r.status_code == 201 and r.json()["duration_s"] > 2.5
    r = upload(2, replace="perhaps")
    assert r.status_code == 400 and r.json()["error"]["param"] == "replace"
    assert httpx.delete(url + "/swap").status_code == 200
