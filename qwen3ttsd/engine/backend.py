"""The seam between the scheduler (policy) and an engine backend (mechanics).

The scheduler decides *which* streams run (priorities, sessions, queue limits); a backend
decides *how*: it admits a stream at a step boundary, advances every admitted stream with
``step()``, and reports through each stream's ``sink`` as things happen:

* ``("audio", pcm)``  float32 mono 24 kHz samples, in order;
* ``("done", stats)`` exactly once on success (:class:`SynthesisStats`);
* ``("error", err)``  exactly once on failure (a :class:`TTSError`; ``Cancelled`` when the
  stream's ``cancel`` event was set).

Two backends exist: ``sequential`` (today's :class:`Engine`, one stream at a time, each
``step`` runs a whole generation through qwen-tts's ``generate``) and ``batched`` (the step
engine in :mod:`.batched`: one decode step of every active stream per ``step``). All calls
happen on the scheduler's GPU thread.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..errors import Cancelled, TTSError

log = logging.getLogger("qwen3ttsd.engine")

BACKENDS = ("batched", "sequential")

Sink = Callable[[str, Any], None]


@dataclass(eq=False)
class Stream:
    """One generation in flight (one text segment of a request)."""

    request: Any                           # SynthesisRequest
    sink: Sink
    cancel: threading.Event = field(default_factory=threading.Event)
    decoder: Any = None                    # StreamingDecoder carried across segments (or None)
    on_codes: Callable[[Any], None] | None = None  # diagnostics: each decoded chunk's (T, 16) codes


class Backend(Protocol):
    engine: Any
    capacity: int

    @property
    def active(self) -> int:
        """Streams admitted and not yet finished."""

    def admit(self, stream: Stream) -> None:
        """Take ``stream`` in. Never raises: bad input is reported through the sink."""

    def step(self) -> None:
        """Advance every admitted stream (a no-op when none is)."""

    def abort_all(self, err: TTSError) -> None:
        """Finish every admitted stream with ``err`` (model unloaded, daemon stopping)."""


def internal_error(e: BaseException) -> TTSError:
    if isinstance(e, TTSError):
        return e
    log.exception("generation failed")
    return TTSError("internal", f"generation failed: {type(e).__name__}: {e}")


class SequentialBackend:
    """Today's engine behind the seam: one whole generation per ``step``."""

    capacity = 1

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._waiting: deque[Stream] = deque()

    @property
    def active(self) -> int:
        return len(self._waiting)

    def admit(self, stream: Stream) -> None:
        self._waiting.append(stream)

    def step(self) -> None:
        if not self._waiting:
            return
        s = self._waiting.popleft()
        try:
            stats = self.engine.synthesize(s.request, lambda pcm: s.sink("audio", pcm), s.cancel,
                                           on_codes=s.on_codes, decoder=s.decoder)
        except BaseException as e:  # noqa: BLE001 - reported to the stream, never kills the thread
            s.sink("error", internal_error(e))
        else:
            s.sink("done", stats)

    def abort_all(self, err: TTSError) -> None:
        while self._waiting:
            self._waiting.popleft().sink("error", err)


def make_backend(kind: str, engine: Any, max_batch: int = 16) -> Backend:
    if kind == "sequential":
        return SequentialBackend(engine)
    if kind == "batched":
        from .batched import BatchedBackend

        opts = engine.options
        try:
            return BatchedBackend(engine, max_batch=max_batch, quant=opts.quant, batch_decode=opts.batch_decode,
                                  overlap_decode=opts.overlap_decode, prewarm_frames=opts.prewarm_frames)
        except NotImplementedError as e:
            log.warning("batched engine cannot run %s (%s): using the sequential engine", engine.model_dir, e)
            return SequentialBackend(engine)
    raise TTSError("bad_request", f"unknown engine {kind!r}; choose one of {BACKENDS}")


__all__ = ["BACKENDS", "Backend", "Cancelled", "SequentialBackend", "Stream", "make_backend"]
