"""The engine thread and its queues: fair, bounded, cancellable; the backends step.

All torch work runs on one thread, never on the event loop. The scheduler keeps policy
only: which request's next text segment enters which loaded model's backend, when. The
backends (``engine/factory.py``) do the work; how many streams each takes at once is its
own ``capacity``. Between two engine steps the thread runs admin calls (load, voice
prompts: their own queue, ahead of everything), then admits queued segments while their
model's backend has room: ``realtime`` (phone calls) before ``normal``, a session's request
only after the previous one of the same session is done, in queue order otherwise. A
request is a list of segments; after each segment it goes to the back of the queue, so a
long narration cannot hold the engine while others wait. Each request has a queue timeout;
the queue has a bound (beyond it: ``busy``), and calls come first there too: a request
waiting on its session's previous one (a call's next segment) takes no slot, and the last
``realtime_reserve`` slots (at most half) are for ``realtime`` requests only, so a burst of plain HTTP
requests cannot refuse a call's segment. Events go back to the event loop through the
job's asyncio queue; cancellation is a threading.Event the backend checks every step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..engine.backend import Audio, Done, Failed, Stream, StreamEvent
from ..errors import Cancelled, TTSError
from .job import PRIORITIES, Job, JobDone, Progress, SegmentDone
from .models import ModelRegistry

log = logging.getLogger("qwen3ttsd.scheduler")

WAITING_FACTOR = 8   # requests waiting on their session: at most this many times queue_max


class Scheduler:
    def __init__(self, registry: ModelRegistry, queue_max: int = 64, realtime_reserve: int = 0) -> None:
        """``queue_max`` ready requests may wait; plain ones only ``queue_max - realtime_reserve``
        (the reserve is at most half the queue)."""
        self.registry = registry
        self.queue_max = queue_max
        self.normal_max = max(1, queue_max - min(max(0, realtime_reserve), queue_max // 2))
        self._jobs: deque[Job] = deque()
        self._calls: deque[_Call] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self.current: _Call | None = None      # the admin call running now, if any
        self._active = 0                       # streams inside backends
        self._thread = threading.Thread(target=self._run, name="qwen3ttsd-engine", daemon=True)
        self._thread.start()

    # --- event-loop side ---------------------------------------------------------------

    def submit(self, job: Job) -> int:
        """Queue a job; returns its position. Raises TTSError('busy') when full: a ready
        request is counted against ``queue_max`` (a plain one against ``normal_max``), one
        waiting on its session only against the bound on everything queued."""
        with self._cv:
            if len(self._jobs) >= self.queue_max * WAITING_FACTOR:
                raise TTSError("busy", f"queue full ({len(self._jobs)} requests); retry later")
            if job.ready():
                limit = self.queue_max if job.priority == "realtime" else self.normal_max
                if sum(1 for j in self._jobs if j.ready()) >= limit:
                    raise TTSError("busy", f"queue full ({limit} requests of priority {job.priority}); "
                                   "retry later")
            self._jobs.append(job)
            self._cv.notify()
            position = len(self._jobs)
        for b in self.registry.backends():  # a backend that sleeps in step() (upstream) admits it now
            wake = getattr(b, "wake", None)
            if wake is not None:
                wake()
        return position

    def run_call(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """Run ``fn()`` on the engine thread (admin load, voice prompts) before the next step;
        a model it unloaded is freed before the future resolves."""
        fut = loop.create_future()
        with self._cv:
            self._calls.append(_Call(fn, fut, loop))
            self._cv.notify()
        return fut

    @property
    def queued(self) -> int:
        with self._cv:
            return len(self._jobs)

    @property
    def busy(self) -> bool:
        with self._cv:
            return bool(self._jobs or self._calls) or self.current is not None or self._active > 0

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            for j in self._jobs:
                j.cancel.set()
            self._cv.notify_all()

    # --- engine thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            while self._next_call():  # calls and admissions happen between steps
                pass
            while (job := self._next_job()) is not None:
                self._start_segment(job)
            if self._stop and not self._jobs:
                for b in self.registry.backends():
                    b.abort_all(TTSError("unavailable", "daemon is stopping"))
                return
            self._step()

    def _next_call(self) -> bool:
        """Run the next queued call, if any; blocks while there is nothing to do at all."""
        with self._cv:
            while not (self._stop or self._calls or self._active or self._admissible()):
                self._cv.wait(0.1 if self._jobs else None)
            if not self._calls:
                return False
            call = self.current = self._calls.popleft()
        try:
            call.run()
        finally:
            self.registry.reap()
            with self._cv:
                self.current = None
        return True

    def _next_job(self) -> Job | None:
        with self._cv:
            job = self._admissible()
            if job is not None:
                self._jobs.remove(job)
            return job

    def _admissible(self) -> Job | None:
        """The first ready job by priority whose model's backend has room."""
        for prio in PRIORITIES:
            for j in self._jobs:
                if j.priority == prio and j.ready() and (j.cancel.is_set() or self._has_room(j)):
                    return j
        return None

    def _has_room(self, job: Job) -> bool:
        """Whether the job's model can take one more stream (a model not loaded yet can:
        admitting loads it)."""
        lm = self.registry.loaded.get(job.model.name)
        return lm is None or getattr(lm.backend, "occupied", lm.backend.active) < lm.backend.capacity

    def _step(self) -> None:
        for b in self.registry.backends():
            if b.active:
                b.step()
        self.registry.reap()

    def _start_segment(self, job: Job) -> None:
        """Hand the job's next segment to its model's backend (or finish the job with its error)."""
        try:
            if job.cancel.is_set():
                raise Cancelled()
            if job.started is None:
                waited = time.monotonic() - job.enqueued
                if waited > job.queue_timeout:
                    raise TTSError("timeout", f"waited {waited:.0f} s in the queue (limit {job.queue_timeout:.0f} s)")
                job.started = time.monotonic()
            lm = self.registry.load(job.model, on_loading=lambda: job.emit(
                Progress({"stage": "loading", "model": job.model.name})), warm=False)   # it is waiting
            if job.next_segment == 0:
                job.emit(Progress({"stage": "generating", "segments": len(job.segments)}))
                job.codec = job.session.codec if job.session is not None else None
            stream = Stream(job.segment_request(job.next_segment), sink=lambda ev: self._on_event(job, ev),
                            cancel=job.cancel, voice=job.voice, continues=job.codec,
                            text=job.text_feed(job.next_segment))
            self._active += 1
            lm.backend.admit(stream)
        except TTSError as e:
            self._finish(job, e)
        except Exception as e:
            log.exception("request failed")
            self._finish(job, TTSError("internal", f"{type(e).__name__}: {e}"))

    def _on_event(self, job: Job, event: StreamEvent) -> None:
        """A backend reports on one segment (engine thread)."""
        if isinstance(event, Audio):
            job.emit(event)
            return
        self._active -= 1
        if isinstance(event, Failed):
            self._finish(job, event.error)
            return
        assert isinstance(event, Done)
        job.frames += event.stats.frames
        job.codec = event.codec
        if job.segment_end is not None:  # a streamed turn may continue in one more generation
            job.segment_end(job.next_segment)
        job.emit(SegmentDone(job.next_segment, event.stats.samples))  # captions
        job.next_segment += 1
        if job.next_segment < len(job.segments):
            with self._cv:  # back of the queue: others get their turn
                self._jobs.append(job)
            return
        if job.session is not None:
            job.session.codec = job.codec
        job.emit(JobDone(job.frames))
        self._finish(job)

    def _finish(self, job: Job, err: TTSError | None = None) -> None:
        if err is not None:
            if job.session is not None:  # a cancelled or failed request leaves no half-spoken state
                job.session.codec = None
            job.emit(Failed(err))
        job.done = True
        job.codec = None
        job.after = None
        with self._cv:
            self._cv.notify()  # a session's next request may be ready now


class _Call:
    """A function to run on the engine thread, its result handed to an event-loop future."""

    def __init__(self, fn: Callable[[], Any], fut: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn, self.fut, self.loop = fn, fut, loop

    def run(self) -> None:
        try:
            result = self.fn()
        except BaseException as e:  # noqa: BLE001
            self.loop.call_soon_threadsafe(_settle, self.fut, None, e)
        else:
            self.loop.call_soon_threadsafe(_settle, self.fut, result, None)


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)
