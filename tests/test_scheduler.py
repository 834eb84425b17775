"""Scheduling policy in-process, with a fake engine backend: no torch, no model, no sleeps.

The scheduler decides which segments run (realtime first, a call's requests in order,
per-segment rotation, queue bound and timeout, cancel); the backend only runs them. A fake
backend that finishes one frame per ``step`` and records what it was given shows the
policy exactly, in milliseconds.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import pytest

from qwen3ttsd.daemon.models import ModelEntry
from qwen3ttsd.daemon.scheduler import Job, Scheduler
from qwen3ttsd.engine.request import SynthesisStats
from qwen3ttsd.errors import TTSError

MODEL = ModelEntry(name="fake", path="/nonexistent", type="custom_voice", size="0b6", speakers=["ryan"],
                   languages=["auto", "english"])


@dataclass
class FakeBackend:
    """Each admitted stream takes ``frames`` steps (one PCM chunk each), then is done."""

    engine: Any
    capacity: int = 1
    frames: int = 2
    streams: list[list[Any]] = field(default_factory=list)   # [stream, frames left]
    log: list[str] = field(default_factory=list)               # the segment texts, as admitted
    gate: threading.Event = field(default_factory=threading.Event)

    @property
    def active(self) -> int:
        return len(self.streams)

    def admit(self, stream: Any) -> None:
        self.log.append(stream.request.text)
        self.streams.append([stream, self.frames])

    def step(self) -> None:
        self.gate.wait(5)  # a test may hold the "GPU" while it queues work
        for entry in list(self.streams):
            stream, left = entry
            if stream.cancel.is_set():
                self.streams.remove(entry)
                stream.sink("error", TTSError("cancelled", "cancelled"))
                continue
            stream.sink("audio", b"pcm")
            entry[1] -= 1
            if entry[1] == 0:
                self.streams.remove(entry)
                stream.sink("done", SynthesisStats(frames=self.frames, samples=self.frames * 1920))

    def abort_all(self, err: TTSError) -> None:
        for stream, _ in self.streams:
            stream.sink("error", err)
        self.streams.clear()


class FakeEngine:
    def __init__(self) -> None:
        self.backend = FakeBackend(self)

    def new_decoder(self) -> object:
        return object()

    def owns_decoder(self, decoder: object) -> bool:
        return True

    def add_voice(self, *args: Any) -> None:
        pass


class FakeRegistry:
    def __init__(self) -> None:
        self.fake = FakeEngine()
        self.engines = {"fake": self.fake}

    def engine(self, entry: ModelEntry, on_loading: Any = None) -> FakeEngine:
        return self.fake

    def free_memory(self) -> None:
        pass


class FakeScheduler(Scheduler):
    def _backend(self, engine: Any) -> Any:
        self._backends[id(engine)] = engine.backend
        return engine.backend


@pytest.fixture()
def sched():
    registry = FakeRegistry()
    s = FakeScheduler(registry, queue_max=8, engine="sequential")  # one stream at a time
    yield s, registry.fake.backend
    registry.fake.backend.gate.set()
    s.stop()


def job(loop: asyncio.AbstractEventLoop, *segments: str, priority: str = "normal", timeout: float = 60) -> Job:
    return Job(model=MODEL, segments=list(segments), request={"language": "english", "speaker": "ryan"},
               loop=loop, priority=priority, queue_timeout=timeout)


async def outcome(j: Job) -> tuple[str, Any]:
    """('done', info) or ('error', TTSError), skipping audio/progress."""
    while True:
        kind, value = await asyncio.wait_for(j.events.get(), 10)
        if kind in ("done", "error"):
            return kind, value


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_realtime_jumps_the_queue(sched):
    s, backend = sched

    async def go() -> None:
        loop = asyncio.get_running_loop()
        jobs = [job(loop, f"normal {i}.") for i in range(3)]
        for j in jobs:
            s.submit(j)
        call = job(loop, "phone call.", priority="realtime")
        s.submit(call)
        backend.gate.set()
        await asyncio.gather(*(outcome(j) for j in (*jobs, call)))

    run(go())
    assert backend.log.index("phone call.") <= 1  # behind at most the one already running


def test_segments_rotate_between_requests(sched):
    s, backend = sched

    async def go() -> None:
        loop = asyncio.get_running_loop()
        long, short = job(loop, "L1.", "L2.", "L3."), job(loop, "S1.")
        s.submit(long)
        s.submit(short)
        backend.gate.set()
        assert (await outcome(long))[0] == "done" and (await outcome(short))[0] == "done"

    run(go())
    assert backend.log.index("S1.") < backend.log.index("L3.")  # the short one did not wait for all of L


def test_a_calls_requests_run_in_order(sched):
    s, backend = sched

    async def go() -> None:
        loop = asyncio.get_running_loop()
        first, second = job(loop, "first."), job(loop, "second.")
        second.after = first
        s.submit(second)  # queued first, but must wait for its predecessor
        s.submit(first)
        backend.gate.set()
        await asyncio.gather(outcome(first), outcome(second))

    run(go())
    assert backend.log == ["first.", "second."]


def test_captions_get_each_segments_samples(sched):
    s, backend = sched

    async def go() -> list[Any]:
        loop = asyncio.get_running_loop()
        j = job(loop, "one.", "two.")
        s.submit(j)
        backend.gate.set()
        ends = []
        while True:
            kind, value = await asyncio.wait_for(j.events.get(), 10)
            if kind == "segment_end":
                ends.append(value)
            if kind == "done":
                return ends

    assert run(go()) == [{"index": 0, "samples": 3840}, {"index": 1, "samples": 3840}]


def test_queue_bound_timeout_and_cancel(sched):
    s, backend = sched

    async def go() -> None:
        loop = asyncio.get_running_loop()
        running = job(loop, "running.")
        s.submit(running)
        while not backend.log:  # the fake GPU holds it (gate closed)
            await asyncio.sleep(0.01)
        waiting = [job(loop, f"w{i}.") for i in range(8)]
        for j in waiting:
            s.submit(j)
        with pytest.raises(TTSError) as ei:
            s.submit(job(loop, "one too many."))
        assert ei.value.code == "busy"
        waiting[0].cancel.set()
        waiting[1].enqueued = time.monotonic() - 3600
        waiting[1].queue_timeout = 1
        backend.gate.set()
        assert (await outcome(waiting[0]))[1].code == "cancelled"
        assert (await outcome(waiting[1]))[1].code == "timeout"
        results = [await outcome(j) for j in (running, *waiting[2:])]
        assert [kind for kind, _ in results] == ["done"] * 7

    run(go())
    assert "w0." not in backend.log and "w1." not in backend.log


def test_unloading_a_model_lets_go_of_its_backend():
    """admin.unload frees the model at once: the scheduler used to keep the idle backend (and
    with it the whole model) until the next request arrived."""
    registry = FakeRegistry()
    s = FakeScheduler(registry, queue_max=8, engine="sequential")
    engine = weakref.ref(registry.fake)
    registry.fake.backend.gate.set()

    async def go() -> None:
        loop = asyncio.get_running_loop()
        j = job(loop, "hello.")
        s.submit(j)
        assert (await outcome(j))[0] == "done"
        await s.run_call(registry.engines.clear, loop)

    try:
        run(go())
        registry.fake = None  # type: ignore[assignment]
        gc.collect()
        assert engine() is None
    finally:
        s.stop()
