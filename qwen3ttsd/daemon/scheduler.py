"""The GPU thread and its queue: fair, bounded, cancellable; the engine backend steps.

All torch work runs on one thread, never on the event loop. The scheduler keeps policy
only: which request's next text segment enters the engine, when. The engine backend
(``engine.backend``: ``batched`` steps up to ``max_batch`` streams together, ``sequential``
runs one whole segment at a time) does the work. Between two engine steps the thread runs
admin calls (load, voice prompts), then admits queued segments while the backend has room:
``realtime`` (phone calls) before ``normal``, a session's request only after the previous
one of the same session is done, in queue order otherwise. A request is a list of segments;
after each segment it goes to the back of the queue, so a long narration cannot hold the
engine while others wait. Each request has a queue timeout; the queue has a bound (beyond
it: ``busy``). Audio goes back to the event loop through the job's asyncio queue;
cancellation is a threading.Event the backend checks every step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..engine.request import SynthesisRequest
from ..errors import Cancelled, TTSError
from ..formats import MODEL_RATE
from .models import ModelEntry, ModelRegistry

log = logging.getLogger("qwen3ttsd.scheduler")

PRIORITIES = ("realtime", "normal")


@dataclass(eq=False)
class Job:
    """One synthesize request as the GPU thread sees it."""

    model: ModelEntry
    segments: list[str]
    request: dict[str, Any]                 # SynthesisRequest fields except text
    loop: asyncio.AbstractEventLoop
    priority: str = "normal"
    languages: list[str] | None = None      # per-segment language (SSML <lang>), else request's
    seed: int | None = None
    voice_audio: Any = None                 # (wav, meta) for clone voices, loaded lazily
    queue_timeout: float = 120.0
    cancel: threading.Event = field(default_factory=threading.Event)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    next_segment: int = 0
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None
    frames: int = 0
    decoder: Any = None
    done: bool = False
    # Requests of one session (a phone call) continue one codec stream, in order:
    session: dict | None = None             # shared slot {"decoder": StreamingDecoder | None}
    after: "Job | None" = None              # the session's previous request

    def emit(self, kind: str, value: Any = None) -> None:
        """Thread-safe hand-off to the request's coroutine."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:
            pass  # loop closed: the daemon is exiting


class Scheduler:
    def __init__(self, registry: ModelRegistry, queue_max: int = 64, engine: str = "batched",
                 max_batch: int = 16) -> None:
        from ..engine.backend import BACKENDS  # torch-free

        if engine not in BACKENDS:
            raise ValueError(f"unknown engine {engine!r}; choose one of {BACKENDS}")
        self.registry = registry
        self.queue_max = queue_max
        self.engine_kind = engine
        self.max_batch = max(1, int(max_batch))
        self._jobs: deque[Job] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self.current: Any = None               # the admin call running now, if any
        self._backends: dict[int, Any] = {}    # id(engine) -> its backend
        self._active = 0                       # streams inside backends
        self._thread = threading.Thread(target=self._run, name="qwen3ttsd-gpu", daemon=True)
        self._thread.start()
        log.info("engine backend %s (max_batch %d)", engine, self.max_batch)

    # --- event-loop side ---------------------------------------------------------------

    def submit(self, job: Job) -> int:
        """Queue a job; returns its position. Raises TTSError('busy') when full."""
        with self._cv:
            if len(self._jobs) >= self.queue_max:
                raise TTSError("busy", f"queue full ({self.queue_max} requests); retry later")
            self._jobs.append(job)
            self._cv.notify()
            return len(self._jobs)

    def run_call(self, fn, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        """Run ``fn()`` on the GPU thread (admin load, voice prompts) before the next step;
        a model it unloaded is freed before the future resolves."""
        fut = loop.create_future()
        job = _CallJob(lambda: self._then_release(fn), fut, loop)
        with self._cv:
            self._jobs.appendleft(job)  # type: ignore[arg-type]
            self._cv.notify()
        return fut

    @property
    def queued(self) -> int:
        with self._cv:
            return sum(1 for j in self._jobs if isinstance(j, Job))

    @property
    def busy(self) -> bool:
        with self._cv:
            return bool(self._jobs) or self.current is not None or self._active > 0

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            for j in self._jobs:
                j.cancel.set()
            self._cv.notify_all()

    # --- GPU thread ---------------------------------------------------------------------

    @property
    def _room(self) -> int:
        cap = self.max_batch if self.engine_kind == "batched" else 1
        return cap - self._active

    def _pick(self) -> Job | _CallJob | None:
        """The next call, or the next admissible job if the engine has room; None if neither.
        Blocks while there is nothing to do at all."""
        with self._cv:
            while not self._stop and self._active == 0 and not self._admissible():
                self._cv.wait(0.1 if self._jobs else None)
            if self._stop and not self._jobs:
                return None
            for j in self._jobs:
                if isinstance(j, _CallJob):
                    self._jobs.remove(j)
                    self.current = j
                    return j
            if self._room <= 0:
                return None
            j = self._admissible()
            if j is not None:
                self._jobs.remove(j)
            return j

    def _admissible(self) -> Any:
        """First call, else first ready job by priority (a session's job waits for the
        previous one; a cancelled job is always ready, to be dropped)."""
        for j in self._jobs:
            if isinstance(j, _CallJob):
                return j
        if self._room <= 0:
            return None
        for prio in PRIORITIES:
            for j in self._jobs:
                if j.priority == prio and (j.after is None or j.after.done or j.cancel.is_set()):
                    return j
        return None

    def _run(self) -> None:
        while True:
            while True:  # calls and admissions happen between steps
                item = self._pick()
                if item is None:
                    break
                if isinstance(item, _CallJob):
                    try:
                        item.run()
                    finally:
                        with self._cv:
                            self.current = None
                    continue
                self._start_segment(item)
            if self._stop and not self._jobs:
                for b in self._backends.values():
                    b.abort_all(TTSError("unavailable", "daemon is stopping"))
                return
            self._step()

    def _step(self) -> None:
        for b in list(self._backends.values()):
            if b.active:
                b.step()
        self._release_unloaded()

    def _then_release(self, fn) -> Any:
        try:
            return fn()
        finally:
            self._release_unloaded()

    def _release_unloaded(self) -> None:
        """Drop the idle backends of unloaded models: a backend holds its whole model."""
        gone = [key for key, b in self._backends.items()
                if not b.active and b.engine not in self.registry.engines.values()]
        for key in gone:
            del self._backends[key]
        if gone:
            self.registry.free_memory()

    def _backend(self, engine: Any) -> Any:
        b = self._backends.get(id(engine))
        if b is None or b.engine is not engine:
            from ..engine.backend import make_backend

            b = self._backends[id(engine)] = make_backend(self.engine_kind, engine, self.max_batch)
        return b

    def _start_segment(self, job: Job) -> None:
        """Hand the job's next segment to the engine (or finish the job with its error)."""
        try:
            if job.cancel.is_set():
                raise Cancelled()
            if job.started is None:
                waited = time.monotonic() - job.enqueued
                if waited > job.queue_timeout:
                    raise TTSError("timeout", f"waited {waited:.0f} s in the queue (limit {job.queue_timeout:.0f} s)")
                job.started = time.monotonic()
            engine = self.registry.engine(
                job.model, on_loading=lambda: job.emit("progress", {"stage": "loading", "model": job.model.name}))
            if job.next_segment == 0:
                job.emit("progress", {"stage": "generating", "segments": len(job.segments)})
                if job.voice_audio is not None:
                    wav, meta = job.voice_audio
                    engine.add_voice(meta["name"], wav, MODEL_RATE, meta.get("ref_text") or None)
                slot = job.session or {}
                prev = slot.get("decoder")
                if prev is not None and engine.owns_decoder(prev):
                    job.decoder = prev  # continue the call's codec stream (same loaded model)
                else:
                    job.decoder = engine.new_decoder()
            from ..engine.backend import Stream

            idx = job.next_segment
            seed = None if job.seed is None else (int(job.seed) + 7919 * idx) & 0x7FFFFFFF
            fields = dict(job.request, language=job.languages[idx]) if job.languages else job.request
            req = SynthesisRequest(text=job.segments[idx], seed=seed, **fields)
            stream = Stream(req, sink=lambda kind, value: self._on_event(job, kind, value),
                            cancel=job.cancel, decoder=job.decoder)
            self._active += 1
            self._backend(engine).admit(stream)
        except TTSError as e:
            self._finish(job, e)
        except Exception as e:
            log.exception("request failed")
            self._finish(job, TTSError("internal", f"{type(e).__name__}: {e}"))

    def _on_event(self, job: Job, kind: str, value: Any) -> None:
        """A backend reports on one segment (GPU thread)."""
        if kind == "audio":
            job.emit("pcm", value)
            return
        self._active -= 1
        if kind == "error":
            self._finish(job, value)
            return
        job.frames += value.frames
        job.emit("segment_end", {"index": job.next_segment, "samples": value.samples})  # captions
        job.next_segment += 1
        if job.next_segment < len(job.segments):
            with self._cv:  # back of the queue: others get their turn
                self._jobs.append(job)
            return
        if job.session is not None:
            job.session["decoder"] = job.decoder
        job.emit("done", {"frames": job.frames})
        self._finish(job)

    def _finish(self, job: Job, err: TTSError | None = None) -> None:
        if err is not None:
            self._forget_session(job)
            job.emit("error", err)
        job.done = True
        job.decoder = None
        job.after = None
        with self._cv:
            self._cv.notify()  # a session's next request may be ready now

    @staticmethod
    def _forget_session(job: Job) -> None:
        """A cancelled or failed request leaves no half-spoken state for the next one."""
        if job.session is not None:
            job.session["decoder"] = None


class _CallJob:
    priority = "call"

    def __init__(self, fn, fut: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
        self.fn, self.fut, self.loop = fn, fut, loop
        self.cancel = threading.Event()

    def run(self) -> None:
        try:
            result = self.fn()
        except BaseException as e:  # noqa: BLE001
            self.loop.call_soon_threadsafe(_set_exc, self.fut, e)
        else:
            self.loop.call_soon_threadsafe(_set_result, self.fut, result)


def _set_result(fut: asyncio.Future, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exc(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
