"""The fleet's policy with scripted links (no processes): least outstanding first, caps,
retry once before the first audio, a clear error after it, down + probe, cancel closes the
upstream's stream. The real-process paths are in test_upstream.py."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from qwen3ttsd.engine.backend import Audio, Done, Failed, Stream
from qwen3ttsd.engine.request import SynthesisRequest
from qwen3ttsd.errors import TTSError
from qwen3ttsd.upstream.backend import UpstreamBackend, UpstreamModel
from qwen3ttsd.upstream.fleet import Continuation, Fleet
from qwen3ttsd.upstream.links import Offer, Unreachable
from qwen3ttsd.upstream.targets import parse


class Script:
    """A link whose behaviour the test sets: ok | refuse | cut | hang."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.sessions: list[str | None] = []
        self.closed = threading.Event()
        self.discover_fails = 0

    async def discover(self):
        if self.discover_fails:
            self.discover_fails -= 1
            raise Unreachable("nope")
        return [Offer("cv", "custom_voice", ["ryan"], ["auto", "english"])]

    async def speak(self, offer, req, voice, session, result):
        self.sessions.append(session)
        try:
            if self.mode == "refuse":
                raise Unreachable("refused")
            yield np.zeros(480, np.float32)
            if self.mode == "cut":
                raise TTSError("unavailable", "connection lost")
            if self.mode == "hang":
                await asyncio.sleep(60)
            yield np.zeros(480, np.float32)
        finally:
            self.closed.set()


def fleet(*modes: str, caps: tuple[int, ...] = ()) -> tuple[Fleet, list[Script]]:
    urls = [f"unix:///u{i}.sock" + (f"?cap={caps[i]}" if caps else "") for i in range(len(modes))]
    f = Fleet(parse(",".join(urls)))
    scripts = [Script(m) for m in modes]
    for up, s in zip(f.upstreams, scripts):
        up.link = s  # type: ignore[assignment]
    f.discover()
    return f, scripts


def run(b: UpstreamBackend, n: int = 1, cont=None, timeout: float = 5.0):
    events: list[list] = [[] for _ in range(n)]
    streams = [Stream(SynthesisRequest("Hi.", speaker="ryan"), sink=events[i].append, continues=cont)
               for i in range(n)]
    for s in streams:
        b.admit(s)
    end = time.monotonic() + timeout
    while b.active and time.monotonic() < end:
        b.step()
    return streams, events


def backend(f: Fleet) -> UpstreamBackend:
    return UpstreamBackend(UpstreamModel(f.entries()["cv"], f))


def test_least_outstanding_first_and_caps_bound_capacity():
    f, _ = fleet("ok", "ok", caps=(1, 2))
    b = backend(f)
    assert b.capacity == 3
    a, _ = f.reserve("custom_voice")
    c, _ = f.reserve("custom_voice")
    assert {a.target.url, c.target.url} == {"unix:///u0.sock", "unix:///u1.sock"}
    d, _ = f.reserve("custom_voice")
    assert d.target.url == "unix:///u1.sock"          # u0 is at its cap
    assert f.reserve("custom_voice") is None and b.capacity == 0


def test_refused_before_audio_is_retried_once_elsewhere_and_marked_down():
    f, s = fleet("refuse", "ok")
    f.upstreams[1].streams = 5   # u0 is picked first
    _, [ev] = run(backend(f))
    assert isinstance(ev[-1], Done) and sum(isinstance(e, Audio) for e in ev) == 2
    st = {u["url"]: u for u in f.status()}
    assert st["unix:///u0.sock"]["state"] == "down" and st["unix:///u0.sock"]["retried_away"] == 1
    assert st["unix:///u1.sock"]["completed"] == 1


def test_a_cut_after_audio_is_a_clear_error_never_a_short_success():
    f, _ = fleet("cut", "ok")
    f.upstreams[1].streams = 5
    _, [ev] = run(backend(f))
    assert isinstance(ev[-1], Failed) and "mid-stream" in ev[-1].error.message
    assert f.status()[0]["failed"] == 1 and f.status()[0]["in_flight"] == 0


def test_all_down_fails_at_once_naming_the_states():
    f, _ = fleet("refuse")
    _, [ev] = run(backend(f))
    assert isinstance(ev[-1], Failed) and ev[-1].error.code == "unavailable"
    _, [ev] = run(backend(f))
    assert "no upstream can take" in ev[-1].error.message and "down" in ev[-1].error.message


def test_down_upstream_is_probed_back_up(monkeypatch):
    from qwen3ttsd.upstream import fleet as fleet_mod

    monkeypatch.setattr(fleet_mod, "PROBE_FIRST_S", 0.05)
    f, [s] = fleet("refuse")
    s.discover_fails = 1
    for up in f.upstreams:
        up.probe_in_s = 0.05
    run(backend(f))
    assert f.upstreams[0].state == "down"
    deadline = time.monotonic() + 5
    while f.upstreams[0].state != "up" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert f.upstreams[0].state == "up"


def test_cancel_closes_the_upstream_stream_at_once():
    f, [s] = fleet("hang")
    b = backend(f)
    [stream], [ev] = run(b, timeout=0.3)
    assert b.active == 1 and isinstance(ev[0], Audio)
    t0 = time.monotonic()
    stream.cancel.set()
    b.step()
    assert isinstance(ev[-1], Failed) and ev[-1].error.code == "cancelled" and b.active == 0
    assert s.closed.wait(1) and time.monotonic() - t0 < 0.5
    deadline = time.monotonic() + 2
    while f.upstreams[0].in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f.upstreams[0].in_flight == 0


def test_a_call_continues_on_its_upstream_with_its_session():
    f, s = fleet("ok", "ok")
    _, [ev] = run(backend(f))
    cont = ev[-1].codec
    assert isinstance(cont, Continuation) and cont.session
    f.upstreams[[u.target.url for u in f.upstreams].index(cont.upstream)].in_flight += 3  # busier
    _, [ev2] = run(backend(f), cont=cont)
    assert ev2[-1].codec == cont   # same upstream, same session: the codec stream goes on
    assert sum(x.sessions.count(cont.session) for x in s) == 2


def test_abort_all_ends_every_stream():
    f, _ = fleet("hang")
    b = backend(f)
    [_], [ev] = run(b, timeout=0.2)
    b.abort_all(TTSError("unavailable", "daemon is stopping"))
    assert isinstance(ev[-1], Failed) and b.active == 0
