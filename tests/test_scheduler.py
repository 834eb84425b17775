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

from qwen3ttsd.daemon.job import Audio, Failed, Job, JobDone, SegmentDone
from qwen3ttsd.daemon.models import ModelEntry, ModelRegistry
from qwen3ttsd.daemon.scheduler import Scheduler
from qwen3ttsd.engine.backend import Done, Stream
from qwen3ttsd.engine.request import SynthesisStats
from qwen3ttsd.errors import Cancelled, TTSError

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
    most: int = 0                                              # the most streams held at once
    gate: threading.Event = field(default_factory=threading.Event)
    status: dict[str, Any] = field(default_factory=dict)
    warmups: int = 0                                           # warmup() calls

    @property
    def active(self) -> int:
        return len(self.streams)

    def admit(self, stream: Stream) -> None:
        self.log.append(stream.request.text)
        self.streams.append([stream, self.frames])
        self.most = max(self.most, len(self.streams))

    def step(self) -> None:
        self.gate.wait(5)  # a test may hold the "GPU" while it queues work
        for entry in list(self.streams):
            stream, left = entry
            if stream.cancel.is_set():
                self.streams.remove(entry)
                stream.sink(Failed(Cancelled()))
                continue
            stream.sink(Audio(b"pcm"))
            entry[1] -= 1
            if entry[1] == 0:
                self.streams.remove(entry)
                stream.sink(Done(SynthesisStats(frames=self.frames, samples=self.frames * 1920), codec=object()))

    def warmup(self) -> None:
        self.warmups += 1

    def abort_all(self, err: TTSError) -> None:
        for stream, _ in self.streams:
            stream.sink(Failed(err))
        self.streams.clear()


class FakeEngine:
    info: dict[str, Any] = {}


def fake_registry(capacity: int = 1, frames: dict[str, int] | None = None,
                  ) -> tuple[ModelRegistry, list[FakeBackend]]:
    """The real registry over fake models: every load opens a new fake engine + backend."""
    opened: list[FakeBackend] = []

    def opener(entry: ModelEntry) -> tuple[Any, Any]:
        engine = FakeEngine()
        opened.append(FakeBackend(engine, capacity=capacity, frames=(frames or {}).get(entry.name, 2)))
        opened[-1].gate.set()
        return engine, opened[-1]

    registry = ModelRegistry(opener=opener)
    registry.entries = {MODEL.name: MODEL}
    return registry, opened


class Sched:
    """A scheduler over one fake model, already loaded."""

    def __init__(self, capacity: int = 1) -> None:
        self.registry, self.opened = fake_registry(capacity)
        opened = self.opened
        self.registry.load(MODEL)
        self.backend = opened[0]
        self.backend.gate.clear()
        self.scheduler = Scheduler(self.registry, queue_max=8)


@pytest.fixture()
def sched():
    h = Sched(capacity=1)  # one stream at a time
    yield h.scheduler, h.backend
    h.backend.gate.set()
    h.scheduler.stop()


def job(loop: asyncio.AbstractEventLoop, *segments: str, priority: str = "normal", timeout: float = 60) -> Job:
    return Job(model=MODEL, segments=list(segments), request={"language": "english", "speaker": "ryan"},
               loop=loop, priority=priority, queue_timeout=timeout)


async def outcome(j: Job) -> tuple[str, Any]:
    """('done', JobDone) or ('error', TTSError), skipping audio/progress."""
    while True:
        ev = await asyncio.wait_for(j.events.get(), 10)
        if isinstance(ev, JobDone):
            return "done", ev
        if isinstance(ev, Failed):
            return "error", ev.error


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
            ev = await asyncio.wait_for(j.events.get(), 10)
            if isinstance(ev, SegmentDone):
                ends.append(ev)
            if isinstance(ev, JobDone):
                return ends

    assert run(go()) == [SegmentDone(0, 3840), SegmentDone(1, 3840)]


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
    h = Sched()
    s, registry = h.scheduler, h.registry
    h.backend.gate.set()
    engine = weakref.ref(h.backend.engine)
    h.opened.clear()
    del h

    async def go() -> None:
        loop = asyncio.get_running_loop()
        j = job(loop, "hello.")
        s.submit(j)
        assert (await outcome(j))[0] == "done"
        assert await s.run_call(registry.unload, loop) == ["fake"]

    try:
        run(go())
        gc.collect()
        assert engine() is None and not registry.backends()
    finally:
        s.stop()


def test_a_load_for_a_waiting_request_skips_the_warm_up():
    """The load warm-up (a 2-frame stream) ran inside every load, so the first caller after a
    spawn waited for it before its own first step (issue 19, cold start). A load that a
    request (or a caller waking the daemon) triggers skips it; admin load, preload and
    tts.warmup still warm."""
    registry, opened = fake_registry()
    s = Scheduler(registry, queue_max=8)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        j = job(loop, "hello.")
        s.submit(j)
        assert (await outcome(j))[0] == "done"
        assert opened[0].warmups == 0
        await s.run_call(lambda: registry.load(MODEL), loop)   # a tts.warmup after it: now warm
        await s.run_call(lambda: registry.load(MODEL), loop)   # once
        assert opened[0].warmups == 1
        assert await s.run_call(registry.unload, loop) == ["fake"]
        await s.run_call(lambda: registry.load(MODEL), loop)   # admin load, preload, tts.warmup

    try:
        run(go())
        assert [b.warmups for b in opened] == [1, 1]
        assert registry.load(MODEL, warm=False) is registry.loaded["fake"]   # loaded: nothing to do
        assert opened[1].warmups == 1
    finally:
        s.stop()


def test_a_model_unloaded_mid_stream_finishes_its_streams_then_is_freed():
    h = Sched()
    s, registry, backend = h.scheduler, h.registry, h.backend
    backend.frames = 20

    async def go() -> None:
        loop = asyncio.get_running_loop()
        j = job(loop, "hello.")
        s.submit(j)
        while not backend.log:
            await asyncio.sleep(0.01)
        await s.run_call(registry.unload, loop)
        assert registry.retiring and not registry.loaded
        backend.gate.set()
        assert (await outcome(j))[0] == "done"
        for _ in range(500):  # dropped right after the step that finished it
            if not registry.retiring:
                break
            await asyncio.sleep(0.01)

    try:
        run(go())
        assert not registry.retiring and not registry.backends()
    finally:
        s.stop()


@pytest.mark.parametrize("capacity", [1, 3])
def test_admits_no_more_streams_than_the_backends_capacity(capacity):
    """The sequential engine (capacity 1) gets one stream at a time; a batched one up to its
    capacity, whatever the engine kind is called."""
    h = Sched(capacity=capacity)
    s, backend = h.scheduler, h.backend
    backend.gate.set()

    async def go() -> None:
        loop = asyncio.get_running_loop()
        jobs = [job(loop, f"r{i}.") for i in range(6)]
        for j in jobs:
            s.submit(j)
        assert [k for k, _ in [await outcome(j) for j in jobs]] == ["done"] * 6

    try:
        run(go())
    finally:
        s.stop()
    assert backend.most == capacity


def test_a_backend_at_capacity_does_not_block_another_models_requests():
    registry, opened = fake_registry(capacity=1, frames={"fake": 100_000})
    other = ModelEntry(name="other", path="/nonexistent", type="custom_voice", size="0b6", speakers=["ryan"],
                       languages=["auto", "english"])
    registry.entries["other"] = other
    s = Scheduler(registry, queue_max=8)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        held = [job(loop, "held 1."), job(loop, "held 2.")]
        for j in held:
            s.submit(j)
        free = Job(model=other, segments=["other."], request={"language": "english", "speaker": "ryan"}, loop=loop)
        s.submit(free)
        assert (await outcome(free))[0] == "done"
        assert opened[0].log == ["held 1."]  # the first model's only slot is still taken
        for j in held:
            j.cancel.set()
        assert [k for k, _ in await asyncio.gather(*(outcome(j) for j in held))] == ["error", "error"]

    try:
        run(go())
    finally:
        s.stop()


def test_part_of_the_queue_is_held_for_realtime():
    """Plain requests fill only queue_max - realtime_reserve slots: a call's segment is still
    admitted when ordinary requests have filled everything they may (issue 21, calls first)."""
    h = Sched(capacity=1)
    s = Scheduler(h.registry, queue_max=8, realtime_reserve=3)
    try:
        async def go() -> None:
            loop = asyncio.get_running_loop()
            for i in range(5):
                s.submit(job(loop, f"n{i}."))
            with pytest.raises(TTSError) as ei:
                s.submit(job(loop, "one plain too many."))
            assert ei.value.code == "busy"
            for i in range(3):  # the reserve: realtime only
                s.submit(job(loop, f"call {i}.", priority="realtime"))
            with pytest.raises(TTSError) as ei:
                s.submit(job(loop, "the queue is full now.", priority="realtime"))
            assert ei.value.code == "busy"

        run(go())
    finally:
        h.backend.gate.set()
        s.stop()
        h.scheduler.stop()


def test_requests_waiting_on_their_session_do_not_count_against_the_queue():
    """A call's next segment, queued behind its previous one, takes no queue slot: a full
    queue of plain requests cannot refuse it (it is still bounded, by a multiple of queue_max)."""
    h = Sched(capacity=1)
    s = Scheduler(h.registry, queue_max=4)
    try:
        async def go() -> None:
            loop = asyncio.get_running_loop()
            head = job(loop, "call head.", priority="realtime")
            s.submit(head)
            for i in range(3):
                s.submit(job(loop, f"n{i}."))
            prev = head
            for i in range(6):  # each waits on the one before it
                nxt = job(loop, f"call {i}.", priority="realtime")
                nxt.after = prev
                s.submit(nxt)
                prev = nxt
            with pytest.raises(TTSError) as ei:
                s.submit(job(loop, "plain."))
            assert ei.value.code == "busy"
            h.backend.gate.set()
            assert (await outcome(prev))[0] == "done"

        run(go())
        assert [t for t in h.backend.log if t.startswith("call")][:2] == ["call head.", "call 0."]
    finally:
        h.backend.gate.set()
        s.stop()
        h.scheduler.stop()


def test_the_session_waiting_queue_is_bounded_too():
    h = Sched(capacity=1)
    s = Scheduler(h.registry, queue_max=2)
    try:
        async def go() -> None:
            loop = asyncio.get_running_loop()
            prev = job(loop, "head.")
            s.submit(prev)
            with pytest.raises(TTSError) as ei:
                for _ in range(1000):
                    nxt = job(loop, "waits.")
                    nxt.after = prev
                    s.submit(nxt)
                    prev = nxt
            assert ei.value.code == "busy"
            assert s.queued <= 2 * 8

        run(go())
    finally:
        h.backend.gate.set()
        s.stop()
        h.scheduler.stop()
