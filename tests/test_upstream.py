"""engine=upstream end to end, with real parts: a front daemon in front of a real second
daemon (unix upstream) and of a real bridge (HTTP upstream), a fault-injecting proxy in
between, and a bridge in front of the front for the HTTP/SSE/WebSocket paths."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

from qwen3ttsd.client import Client
from qwen3ttsd.errors import TTSError

from .helpers import PY, daemon_env, start_daemon, synth, wait_for, wyoming_audio_bytes

pytestmark = pytest.mark.slow


def front_env(state: Path, upstream: str, **extra: object) -> dict[str, str]:
    env = daemon_env("", state, engine="upstream", upstream=upstream, **extra)
    env.pop("QWEN3TTSD_MODEL")
    return env


def admin(rt: Path, method: str = "admin.status", params: dict | None = None):
    with Client(str(rt / "admin.sock")) as c:
        return c.call(method, params or {})


@pytest.fixture(scope="module")
def upstream_daemon(tiny_models, tmp_path_factory):
    rt = tmp_path_factory.mktemp("up")
    env = daemon_env("", rt / "state", idle_timeout=-1)
    env.pop("QWEN3TTSD_MODEL")
    env["QWEN3TTSD_MODELS_DIR"] = str(tiny_models["custom_voice"].parent)
    env["QWEN3TTSD_DEFAULT_MODEL"] = "custom_voice"
    env["QWEN3TTSD_MAX_LOADED_MODELS"] = "3"
    p = start_daemon(rt, env)
    yield rt
    p.terminate()
    p.wait(30)


class Proxy:
    """A unix-socket proxy in front of an upstream daemon that can refuse, delay or cut."""

    def __init__(self, path: Path | None, target: Path | tuple[str, int]) -> None:
        self.path, self.target = path, target   # path None: TCP on self.port, to target (host, port)
        self.port = 0
        self.mode = "pass"       # pass | refuse | delay | cut | cut_once (one cut, then pass)
        self.cut_after = 20_000  # bytes of answer passed before a cut
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)

    async def _start(self) -> None:
        if self.path is None:
            self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
        else:
            self.server = await asyncio.start_unix_server(self._conn, str(self.path))

    async def _open(self):
        if isinstance(self.target, tuple):
            return await asyncio.open_connection(*self.target)
        return await asyncio.open_unix_connection(str(self.target))

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            w.close()
            return
        if self.mode == "delay":
            await asyncio.sleep(0.5)
        ur, uw = await self._open()

        async def pipe(src, dst, answer: bool):
            # the mode is read per chunk: a kept-alive HTTP connection is faulted too
            cut = 0
            try:
                while data := await src.read(4096):
                    if not answer and self.mode == "refuse":
                        break              # the request never reaches the upstream
                    if answer and self.mode in ("cut", "cut_once"):
                        cut += len(data)
                        if cut > self.cut_after:   # pass what is under the limit, then hang up
                            if self.mode == "cut_once":
                                self.mode = "pass"
                            dst.write(data[:len(data) - (cut - self.cut_after)])
                            await dst.drain()
                            break
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()
                w.close()
                uw.close()

        await asyncio.gather(pipe(r, uw, False), pipe(ur, w, True))


def refused_then_retried(rt: Path, url: str) -> bool:
    """Speak until the faulty upstream ``url`` was picked (least outstanding, then fewest
    started) and the request went on elsewhere: every request still succeeds."""
    for _ in range(5):
        r, a, _ = synth(rt / "tts.sock", text="Retried.", voice="ryan", max_frames=4, timeout=60)
        assert a and r["samples"] > 0
        st = {u["url"]: u for u in admin(rt)["upstreams"]}[url]
        if st["retried_away"] >= 1:
            return bool(st["last_error"])
    return False


def test_front_imports_no_torch_and_serves_exact_audio(upstream_daemon, tmp_path):
    code = ("import sys; from qwen3ttsd.upstream import setup, backend, fleet, links; "
            "import qwen3ttsd.daemon.main; print(sorted(m for m in ('torch', 'transformers', 'qwen_tts') "
            "if m in sys.modules))")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, env={**os.environ}, check=True)
    assert out.stdout.strip() == "[]"
    rt = tmp_path / "front"
    p = start_daemon(rt, front_env(tmp_path / "st", f"unix://{upstream_daemon}/tts.sock", idle_timeout=-1))
    try:
        params = dict(text="Hello there.", voice="ryan", format="f32", seed=11, max_frames=12)
        r_front, a_front, events = synth(rt / "tts.sock", **params)
        r_direct, a_direct, _ = synth(upstream_daemon / "tts.sock", **params)
        assert a_front and a_front == a_direct          # the upstream's exact samples, seed kept
        assert r_front["model"] == "custom_voice" and "segment" in events
        st = admin(rt)
        assert st["torch_imported"] is False and st["heavy_imports"] == []
        assert st["rss_bytes"] < 150e6, st["rss_bytes"]
        print(f"front RSS {st['rss_bytes'] / 1e6:.1f} MB")
        [u] = st["upstreams"]
        assert u["state"] == "up" and u["completed"] >= 1 and u["in_flight"] == 0
        # SSML breaks, speed and a telephony format are done in front
        r, a, ev = synth(rt / "tts.sock", text="One. <break time='500ms'/> Two.", voice="ryan", format="mulaw",
                         sample_rate=8000, speed=1.5, max_frames=6)
        assert r["segments"] == 2 and ev.count("segment") == 2 and len(a) > 0.5 * 8000 / 1.5 * 0.9
    finally:
        p.terminate()
        p.wait(30)


def test_cancel_reaches_upstream_and_front_idle_exits(upstream_daemon, tmp_path):
    rt = tmp_path / "front"
    p = start_daemon(rt, front_env(tmp_path / "st", f"unix://{upstream_daemon}/tts.sock", idle_timeout=2))
    with Client(str(rt / "tts.sock")) as c:
        for ev in c.synthesize(text="A long sentence that goes on and on. " * 8, voice="ryan", format="pcm16",
                               max_frames=2000):
            if ev.kind == "chunk":
                break   # closing the connection cancels
    wait_for(lambda: admin(upstream_daemon)["active_streams"] == 0, 3, what="upstream stream closed")
    assert p.wait(30) == 0   # the front idle-exits on its own


def test_unreachable_upstream_is_skipped_and_shown_down(upstream_daemon, tmp_path):
    rt = tmp_path / "front"
    spec = f"unix://{tmp_path}/nothing.sock,unix://{upstream_daemon}/tts.sock"
    p = start_daemon(rt, front_env(tmp_path / "st", spec, idle_timeout=-1))
    try:
        r, a, _ = synth(rt / "tts.sock", text="Still here.", voice="ryan", max_frames=4)
        assert a and r["samples"] > 0
        ups = {u["url"]: u for u in admin(rt)["upstreams"]}
        down = ups[f"unix://{tmp_path}/nothing.sock"]
        assert down["state"] == "down" and "cannot connect" in down["last_error"]
    finally:
        p.terminate()
        p.wait(30)


def test_every_upstream_down_says_so_not_install_a_model(tmp_path):
    rt = tmp_path / "front"
    spec = f"unix://{tmp_path}/nothing.sock,http://127.0.0.1:9"
    p = start_daemon(rt, front_env(tmp_path / "st", spec, idle_timeout=-1))
    try:
        with pytest.raises(TTSError) as e:
            synth(rt / "tts.sock", text="Anyone there?", voice="ryan", max_frames=4, timeout=30)
        assert e.value.code == "unavailable" and e.value.retryable
        assert "no upstream" in e.value.message and "models pull" not in e.value.message
        assert f"unix://{tmp_path}/nothing.sock" in e.value.message and "http://127.0.0.1:9" in e.value.message
    finally:
        p.terminate()
        p.wait(30)


def test_bad_upstream_spec_by_hand_exits_2_before_it_listens(tmp_path):
    """Run by hand (not activated): a bad upstream list is reported and the daemon exits 2
    without binding its sockets or saying it listens."""
    rt = tmp_path / "front"
    env = front_env(tmp_path / "st", f"unix://{tmp_path}/u.sock?cap=0", idle_timeout=-1)
    r = subprocess.run([PY, "-m", "qwen3ttsd.daemon.main", "--runtime-dir", str(rt)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "bad configuration" in r.stderr and "cap=N" in r.stderr, r.stderr
    assert "listening" not in r.stderr and "Traceback" not in r.stderr
    assert not (rt / "tts.sock").exists()


def test_faults_refuse_retry_cut_midstream_and_recover(upstream_daemon, tmp_path):
    proxy = Proxy(tmp_path / "proxy.sock", upstream_daemon / "tts.sock")
    rt = tmp_path / "front"
    spec = f"unix://{proxy.path},unix://{upstream_daemon}/tts.sock?cap=1"
    p = start_daemon(rt, front_env(tmp_path / "st", spec, idle_timeout=3))
    try:
        proxy.mode = "cut"   # fails after audio went out: a clear error, never a silent truncation
        proxy.cut_after = 30_000
        with pytest.raises(TTSError) as e:
            # the proxy (cap 16, 0 in flight) is picked first: fewest outstanding, then fewest started
            synth(rt / "tts.sock", text="Cut me off somewhere in the middle please. " * 4, voice="ryan",
                  format="pcm16", max_frames=400, timeout=60)
        assert e.value.code == "unavailable" and "mid-stream" in e.value.message
        cut = {u["url"]: u for u in admin(rt)["upstreams"]}[f"unix://{proxy.path}"]
        proxy.mode = "pass"   # the cut upstream is asked again at once (and answers), not left as is
        wait_for(lambda: ({u["url"]: u for u in admin(rt)["upstreams"]}[f"unix://{proxy.path}"]["answered_at"]
                          or 0) > cut["last_error_at"], 10, what="the cut unix upstream asked again")
        proxy.mode = "delay"  # slow is fine (whichever upstream the tie-break picks)
        for _ in range(2):
            r, a, _ = synth(rt / "tts.sock", text="Slow.", voice="ryan", max_frames=4, timeout=60)
            assert a and r["samples"] > 0
        st = {u["url"]: u for u in admin(rt)["upstreams"]}
        assert st[f"unix://{proxy.path}"]["failed"] >= 1 and st[f"unix://{proxy.path}"]["last_error"]
        proxy.mode = "refuse"  # refused before audio: retried once on the other upstream
        assert refused_then_retried(rt, f"unix://{proxy.path}")
    finally:
        assert p.wait(60) == 0   # nothing hung: the front still idle-exits


# --- HTTP upstream (a real second bridge) and a bridge in front of the front ---------------


def _ref_wav() -> bytes:
    import io

    import soundfile as sf

    t = np.arange(int(24000 * 2.5)) / 24000
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), 24000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def http_upstream(tiny_models, tmp_path_factory):
    from .test_bridge import Bridge

    b = Bridge(tmp_path_factory.mktemp("httpup"), tiny_models["custom_voice"].parent, idle=120)
    yield b
    b.stop()


def test_http_upstream_through_a_front_bridge(http_upstream, tmp_path):
    from wyoming.tts import Synthesize

    from qwen3ttsd.testing import free_port

    from .test_bridge import Bridge

    wy = free_port()
    front = Bridge(tmp_path, tmp_path / "no-models", idle=60, args=["--wyoming", f"tcp://127.0.0.1:{wy}"],
                   extra_env={"QWEN3TTSD_ENGINE": "upstream", "QWEN3TTSD_UPSTREAM": http_upstream.url})
    try:
        # plain HTTP (mp3 encoded in front), SSE
        r = httpx.post(front.url + "/v1/audio/speech", json={"model": "custom_voice", "voice": "ryan", "input":
                       "Hello through two hops.", "response_format": "wav", "max_frames": 8}, timeout=120)
        assert r.status_code == 200 and r.content[:4] == b"RIFF" and len(r.content) > 44
        # /health learns the upstreams after any synthesis (not only after a Wyoming one)
        wait_for(lambda: front.health().get("upstreams"), 10, what="/health upstreams after HTTP speech")
        with httpx.stream("POST", front.url + "/v1/audio/speech", json={"voice": "ryan", "input": "SSE too.",
                          "response_format": "pcm", "stream_format": "sse", "max_frames": 6}, timeout=120) as s:
            kinds = [json.loads(line[5:])["type"] for line in s.iter_lines() if line.startswith("data:")]
        assert "speech.audio.delta" in kinds and kinds[-1] == "speech.audio.done"
        # a WebSocket call, its turns as clauses and as streamed text (the upstream backend
        # cannot stream text: the bridge falls back to clauses)
        async def call(text_mode: str = "clause") -> int:
            async with websockets.connect(front.url.replace("http", "ws") + "/v1/audio/speech/stream") as ws:
                await ws.send(json.dumps({"type": "session.update", "voice": "ryan", "format": "mulaw",
                                          "text_mode": text_mode}))
                await ws.send(json.dumps({"type": "text", "text": "A call through "}))
                await ws.send(json.dumps({"type": "text", "text": "the front."}))
                await ws.send(json.dumps({"type": "flush"}))
                n = 0
                while True:
                    m = await asyncio.wait_for(ws.recv(), 120)
                    if isinstance(m, bytes):
                        n += len(m) - 8
                    elif json.loads(m)["type"] == "flushed":
                        return n
                    elif json.loads(m)["type"] == "error":
                        raise AssertionError(m)
        assert asyncio.run(call()) > 0
        assert asyncio.run(call("stream")) > 0

        # Wyoming
        assert asyncio.run(wyoming_audio_bytes(wy, Synthesize(text="Wyoming through the front."))) > 0

        # a clone voice from the front's library is registered with the HTTP upstream ...
        r = httpx.post(front.url + "/v1/audio/voices", data={"name": "anna", "consent": "yes"},
                       files={"audio_sample": ("a.wav", _ref_wav(), "audio/wav")}, timeout=120)
        assert r.status_code == 201, r.text

        def speak_clone() -> httpx.Response:
            return httpx.post(front.url + "/v1/audio/speech", json={"voice": "anna", "input": "Cloned.",
                              "response_format": "pcm", "max_frames": 4}, timeout=120)
        assert speak_clone().status_code == 200
        up_voices = [v["id"] for v in httpx.get(http_upstream.url + "/v1/audio/voices").json()["data"]]
        [uploaded] = [v for v in up_voices if v.startswith("anna-")]
        # ... and again when the upstream lost it (a restart): 404 -> upload -> speech
        assert httpx.delete(http_upstream.url + f"/v1/audio/voices/{uploaded}").status_code == 200
        assert speak_clone().status_code == 200
        assert uploaded in [v["id"] for v in httpx.get(http_upstream.url + "/v1/audio/voices").json()["data"]]
        st = front.admin("admin.status")
        [u] = st["upstreams"]
        assert u["state"] == "up" and u["flavour"] == "qwen3ttsd" and u["failed"] == 0 and u["completed"] >= 5
        assert st["torch_imported"] is False
        # /health and /metrics show it (from the facts refreshed after a synthesis: no connection)
        wait_for(lambda: front.health().get("upstreams"), 10, what="/health upstreams")
        [hu] = front.health()["upstreams"]
        assert hu["url"] == http_upstream.url and hu["state"] == "up" and "in_flight" in hu and "last_error" in hu
        m = httpx.get(front.url + "/metrics").text
        assert f'qwen3tts_upstream_up{{upstream="{http_upstream.url}"}} 1' in m
        assert f'qwen3tts_upstream_completed_total{{upstream="{http_upstream.url}"}}' in m
    finally:
        front.stop()


def test_http_upstream_faults_through_a_proxy(http_upstream, upstream_daemon, tmp_path):
    """Refused -> retried on the other upstream; cut mid-stream -> a clear error; the front
    idle-exits afterwards."""
    port = int(http_upstream.url.rsplit(":", 1)[1])
    proxy = Proxy(None, ("127.0.0.1", port))
    rt = tmp_path / "front"
    spec = f"http://127.0.0.1:{proxy.port},unix://{upstream_daemon}/tts.sock"
    p = start_daemon(rt, front_env(tmp_path / "st", spec, idle_timeout=6))
    try:
        http_url = f"http://127.0.0.1:{proxy.port}"
        st = {u["url"]: u for u in admin(rt)["upstreams"]}
        assert st[http_url]["state"] == "up" and st[http_url]["flavour"] == "qwen3ttsd"
        proxy.mode = "cut_once"
        proxy.cut_after = 1200   # past the response head: some audio, then the connection drops
        with pytest.raises(TTSError) as e:
            synth(rt / "tts.sock", text="Cut me off somewhere in the middle please. " * 4, voice="ryan",
                  format="pcm16", max_frames=400, timeout=60)
        assert e.value.code == "unavailable" and "mid-stream" in e.value.message
        # one cut stream is not a down upstream: it stays up (a rediscovery checks it) and
        # serves the next request at once, not after a probe's backoff
        def http_up() -> dict:
            return {u["url"]: u for u in admin(rt)["upstreams"]}[http_url]

        assert http_up()["state"] == "up"
        cut_at = http_up()["last_error_at"]
        wait_for(lambda: (http_up()["answered_at"] or 0) > cut_at, 10, what="the cut upstream asked again")
        assert http_up()["state"] == "up"
        proxy.mode = "refuse"
        assert refused_then_retried(rt, http_url)
    finally:
        assert p.wait(60) == 0


def test_websocket_barge_in_through_the_front_stops_the_upstream(upstream_daemon, tmp_path):
    from .test_bridge import Bridge

    front = Bridge(tmp_path, tmp_path / "no-models", idle=60,
                   extra_env={"QWEN3TTSD_ENGINE": "upstream",
                              "QWEN3TTSD_UPSTREAM": f"unix://{upstream_daemon}/tts.sock"})
    try:
        async def call() -> list[str]:
            async with websockets.connect(front.url.replace("http", "ws") + "/v1/audio/speech/stream") as ws:
                await ws.send(json.dumps({"type": "session.update", "voice": "ryan", "format": "pcm16",
                                          "max_frames": 2000}))
                await ws.send(json.dumps({"type": "text", "text": "A long answer that goes on and on. " * 6}))
                await ws.send(json.dumps({"type": "flush"}))
                while not isinstance(await asyncio.wait_for(ws.recv(), 120), bytes):
                    pass
                assert admin(upstream_daemon)["active_streams"] == 1   # the upstream is speaking it
                await ws.send(json.dumps({"type": "cancel"}))
                t0 = time.monotonic()
                wait_for(lambda: admin(upstream_daemon)["active_streams"] == 0, 3, what="upstream stopped")
                took = time.monotonic() - t0
                assert took < 1.0, took
                return []
        asyncio.run(call())
    finally:
        front.stop()


def test_http_upstream_real_restart_loses_voices_and_front_reregisters(tiny_models, tmp_path):
    """A real restart, not a deleted voice: the upstream bridge and its daemon stop and come
    back on the same port with a fresh state dir (no voices). Unnoticed (no request while it
    was away: the front's kept-alive connection is stale) and noticed (a request while away:
    a clear error at once, marked down, probed back up), the front's clone voice is spoken
    again (404 or rediscovery -> upload -> speech), nothing hangs, and the front still idle-exits."""
    from .test_bridge import Bridge

    models = tiny_models["custom_voice"].parent
    for d in ("up1", "up2", "up3"):
        (tmp_path / d).mkdir()
    up = Bridge(tmp_path / "up1", models, idle=120)
    rt = tmp_path / "front"
    p = start_daemon(rt, front_env(tmp_path / "st", up.url, idle_timeout=15))

    def speak() -> None:
        t0 = time.monotonic()
        r, a, _ = synth(rt / "tts.sock", text="Cloned.", voice="anna", format="pcm16", max_frames=4, timeout=60)
        assert a and r["samples"] > 0
        print(f"clone request: {time.monotonic() - t0:.2f} s")

    def up_voices(b: Bridge) -> list[str]:
        return [v["id"] for v in httpx.get(b.url + "/v1/audio/voices", timeout=10).json()["data"]
                if v["id"].startswith("anna-")]

    def upstream() -> dict:
        [u] = admin(rt)["upstreams"]
        return u

    try:
        with Client(str(rt / "tts.sock")) as c:
            c.call("voices.add", {"name": "anna", "audio": _ref_wav(), "ref_text": "x", "consent": "test"})
        speak()
        [uploaded] = up_voices(up)
        # 1. unnoticed restart: nothing asked while it was away
        up.stop()
        up = Bridge(tmp_path / "up2", models, idle=120, port=up.port)   # fresh state dir: no voices
        assert up_voices(up) == [] and upstream()["state"] == "up"
        speak()                                    # 404 -> uploaded again -> speech
        assert up_voices(up) == [uploaded]
        # 2. noticed: a request while it is away gets a clear error at once
        up.stop()
        t0 = time.monotonic()
        with pytest.raises(TTSError) as e:
            speak()
        assert e.value.code == "unavailable" and time.monotonic() - t0 < 10
        assert upstream()["state"] == "down"
        up = Bridge(tmp_path / "up3", models, idle=120, port=up.port)
        wait_for(lambda: upstream()["state"] == "up", 10, what="probed back up")
        speak()
        assert up_voices(up) == [uploaded]
        u = upstream()
        assert u["state"] == "up" and u["in_flight"] == 0 and u["completed"] == 3 and u["failed"] == 0, u
    finally:
        up.stop()
        assert p.wait(90) == 0   # nothing hung: the front idle-exits
    err = p.stderr.read().decode()
    # unnoticed: the 404 told it; noticed: the probe's rediscovery did (uploaded before speech)
    assert err.count("lost clone voice anna: uploading it again") == 1, err[-3000:]
    assert err.count("registered clone voice anna-") == 3, err[-3000:]
