"""The GPU thread and its queue: fair, bounded, cancellable.

All torch work runs on one thread, never on the event loop. A request is a list of text
segments; the thread runs one segment at a time and rotates between requests, so a long
narration cannot hold the GPU while a phone call waits more than one segment. Requests
marked ``realtime`` (phone calls) go before ``normal`` ones. Each request has a queue
timeout; the queue has a bound (beyond it: ``busy``). Audio goes back to the event loop
through the job's asyncio queue; cancellation is a threading.Event the engine checks every
frame.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..errors import Cancelled, TTSError
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
    def __init__(self, registry: ModelRegistry, queue_max: int = 64) -> None:
        self.registry = registry
        self.queue_max = queue_max
        self._jobs: deque[Job] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self.current: Job | None = None
        self._thread = threading.Thread(target=self._run, name="qwen3ttsd-gpu", daemon=True)
        self._thread.start()

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
        """Run ``fn()`` on the GPU thread (admin load, voice prompts) ahead of queued jobs."""
        fut = loop.create_future()
        job = _CallJob(fn, fut, loop)
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
            return bool(self._jobs) or self.current is not None

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            for j in self._jobs:
                j.cancel.set()
            self._cv.notify_all()

    # --- GPU thread ---------------------------------------------------------------------

    def _pick(self) -> Job | None:
        with self._cv:
            while not self._jobs and not self._stop:
                self._cv.wait()
            if self._stop and not self._jobs:
                return None
            for prio in ("call",) + PRIORITIES:
                for j in self._jobs:
                    if getattr(j, "priority", None) == prio and (getattr(j, "after", None) is None or j.after.done):
                        self._jobs.remove(j)
                        self.current = j
                        return j
            j = self._jobs.popleft()
            self.current = j
            return j

    def _requeue(self, job: Job) -> None:
        with self._cv:
            self._jobs.append(job)
            self.current = None
            self._cv.notify()

    def _run(self) -> None:
        while True:
            job = self._pick()
            if job is None:
                return
            try:
                if isinstance(job, _CallJob):
                    job.run()
                    continue
                if self._step(job):
                    self._requeue(job)
                    continue
            finally:
                with self._cv:
                    if self.current is job:
                        self.current = None

    def _step(self, job: Job) -> bool:
        """Run one segment. Returns True if the job has more segments to go."""
        try:
            if job.cancel.is_set():
                raise Cancelled()
            if job.started is None:
                waited = time.monotonic() - job.enqueued
                if waited > job.queue_timeout:
                    raise TTSError("timeout", f"waited {waited:.0f} s in the queue (limit {job.queue_timeout:.0f} s)")
                job.started = time.monotonic()
            engine = self.registry.engine(job.model, on_loading=lambda: job.emit("progress", {"stage": "loading", "model": job.model.name}))
            if job.next_segment == 0:
                job.emit("progress", {"stage": "generating", "segments": len(job.segments)})
                if job.voice_audio is not None:
                    wav, meta = job.voice_audio
                    engine.add_voice(meta["name"], wav, 24000, meta.get("ref_text") or None)
                slot = job.session or {}
                prev = slot.get("decoder")
                if prev is not None and prev.decoder is engine._codec_decoder:
                    job.decoder = prev  # continue the call's codec stream (same loaded model)
                else:
                    job.decoder = engine.new_decoder()
            from ..engine import SynthesisRequest

            idx = job.next_segment
            seed = None if job.seed is None else (int(job.seed) + 7919 * idx) & 0x7FFFFFFF
            fields = dict(job.request, language=job.languages[idx]) if job.languages else job.request
            req = SynthesisRequest(text=job.segments[idx], seed=seed, **fields)
            stats = engine.synthesize(req, lambda pcm: job.emit("pcm", pcm), job.cancel,
                                      decoder=job.decoder)
            job.frames += stats.frames
            job.emit("segment_end", {"index": idx, "samples": stats.samples})
            job.next_segment += 1
            if job.next_segment < len(job.segments):
                return True
            if job.session is not None:
                job.session["decoder"] = job.decoder
            job.emit("done", {"frames": job.frames})
        except TTSError as e:
            self._forget_session(job)
            job.emit("error", e)
        except Exception as e:  # noqa: BLE001 - never let one request kill the GPU thread
            log.exception("request failed")
            self._forget_session(job)
            job.emit("error", TTSError("internal", f"{type(e).__name__}: {e}"))
        job.done = True
        job.decoder = None
        job.after = None
        return False

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
