"""A synthesize request as the engine thread sees it, and the typed events it sends back.

The engine thread hands events to the request's coroutine (:mod:`.synthesis`) through the
job's asyncio queue: :class:`Progress`, the engine's :class:`Audio`, :class:`SegmentDone`
after each text segment (captions), then exactly one of :class:`JobDone` or the engine's
:class:`Failed`. Torch-free.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..checkpoints import ModelEntry
from ..engine.backend import Audio, Failed, VoiceSource
from ..engine.request import SynthesisRequest

PRIORITIES = ("realtime", "normal")
SEED_STRIDE = 7919   # segment i of a seeded request is seeded with seed + i * SEED_STRIDE


@dataclass(frozen=True)
class Progress:
    """A stage of the request (``stage``: queued, loading, generating), as the wire's
    ``tts.progress`` notification carries it."""

    info: dict[str, Any]


@dataclass(frozen=True)
class SegmentDone:
    """Text segment ``index`` is fully generated: ``samples`` of model-rate audio."""

    index: int
    samples: int


@dataclass(frozen=True)
class JobDone:
    """Every segment is done."""

    frames: int


JobEvent = Progress | Audio | SegmentDone | JobDone | Failed


@dataclass
class CallSlot:
    """What a phone call carries from one request to the next: its codec stream."""

    codec: Any = None


@dataclass(eq=False)
class Job:
    """One synthesize request: its text segments and how to run them."""

    model: ModelEntry
    segments: list[str]
    request: dict[str, Any]                 # SynthesisRequest fields except text and seed
    loop: asyncio.AbstractEventLoop
    priority: str = "normal"
    languages: list[str] | None = None      # per-segment language (SSML <lang>), else request's
    seed: int | None = None
    voice: VoiceSource | None = None        # a clone voice's reference
    queue_timeout: float = 120.0
    cancel: threading.Event = field(default_factory=threading.Event)
    events: asyncio.Queue[JobEvent] = field(default_factory=asyncio.Queue)
    next_segment: int = 0
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None
    frames: int = 0
    codec: Any = None                       # the codec stream the next segment continues
    done: bool = False
    # Requests of one session (a phone call) continue one codec stream, in order:
    session: CallSlot | None = None
    after: Job | None = None                # the session's previous request
    # A text_stream request: one TextFeed per generation (segments[i] is then ""), and
    # what takes the client's $/text notifications (daemon/text_stream.py)
    feeds: list[Any] | None = None
    text_in: Any = None
    segment_end: Any = None                 # (index) -> None, engine thread: a segment ended, before the next

    def emit(self, event: JobEvent) -> None:
        """Thread-safe hand-off to the request's coroutine."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            pass  # loop closed: the daemon is exiting

    def ready(self) -> bool:
        """May run now: a session's request waits for the previous one (a cancelled job is
        always ready, to be dropped)."""
        return self.after is None or self.after.done or self.cancel.is_set()

    def text_feed(self, index: int) -> Any:
        """Segment ``index``'s TextFeed when its text streams in, else None."""
        return self.feeds[index] if self.feeds is not None else None

    def segment_request(self, index: int) -> SynthesisRequest:
        """What the engine generates for segment ``index``."""
        seed = None if self.seed is None else (int(self.seed) + SEED_STRIDE * index) & 0x7FFFFFFF
        fields = dict(self.request, language=self.languages[index]) if self.languages else self.request
        return SynthesisRequest(text=self.segments[index], seed=seed, **fields)


__all__ = ["Audio", "CallSlot", "Failed", "Job", "JobDone", "JobEvent", "PRIORITIES", "Progress",
           "SegmentDone"]
