"""The :class:`..engine.backend.Backend` of ``engine = "upstream"``: one per front model,
all over one :class:`.fleet.Fleet`.

``admit`` reserves a slot on an upstream and starts the segment's coroutine on the fleet's
loop; the coroutine's events queue here and ``step`` (engine thread) hands them to the
streams' sinks, so the scheduler sees exactly what a local engine would report. ``step``
sleeps until an event arrives, the scheduler wakes it (:meth:`wake`: a new request), or a
short tick passes to notice a cancel - which closes the upstream's stream at once.
``capacity`` follows the fleet: streams this model runs plus the free slots of the up
upstreams serving its type, so the queue, its limits and priorities stay in front.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ..checkpoints import ModelEntry
from ..engine.backend import BackendOptions, Done, Failed, Stream, StreamEvent, streamed_text_unsupported
from ..errors import Cancelled, TTSError
from .fleet import Continuation, Fleet

TICK_S = 0.02   # the longest a cancel waits to be noticed


@dataclass(eq=False)
class _Run:
    stream: Stream
    future: Future[Any] | None = None
    ended: bool = False


class UpstreamModel:
    """Stands where a loaded Engine would (``LoadedModel.model``): nothing is loaded here."""

    def __init__(self, entry: ModelEntry, fleet: Fleet) -> None:
        self.entry, self.fleet = entry, fleet
        self.prompt_count = 0

    @property
    def info(self) -> dict[str, Any]:
        return {"model": self.entry.name, "type": self.entry.type, "device": "upstream",
                "upstreams": [u.target.url for u in self.fleet.upstreams if u.serves(self.entry.type)]}

    def clear_prompts(self) -> int:
        return 0

    def drop_voice(self, voice_id: str) -> None:
        """Nothing to drop: a voice is uploaded under a name with its audio's hash
        (links.HttpLink.upstream_voice), so an edited voice is a new upload."""


class UpstreamBackend:
    def __init__(self, engine: UpstreamModel, options: BackendOptions = BackendOptions()) -> None:
        self.engine = engine
        self.fleet = engine.fleet
        self.type = engine.entry.type
        self._runs: list[_Run] = []
        self._events: deque[tuple[_Run, StreamEvent]] = deque()
        self._cv = threading.Condition()

    @property
    def capacity(self) -> int:
        """Streams it holds plus free upstream slots; with no upstream up at all, one more
        (admitting it ends it at once with a clear error rather than a queue timeout)."""
        if not any(u.state == "up" and u.serves(self.type) for u in self.fleet.upstreams):
            return len(self._runs) + 1
        return len(self._runs) + self.fleet.room(self.type)

    @property
    def active(self) -> int:
        return len(self._runs)

    @property
    def status(self) -> dict[str, Any]:
        return {"kind": "upstream", "capacity": self.capacity, "active": self.active,
                "upstreams": [u.target.url for u in self.fleet.upstreams if u.serves(self.type)]}

    def wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def admit(self, stream: Stream) -> None:
        if stream.text is not None:   # no upstream API takes text while it runs: clauses instead
            stream.sink(streamed_text_unsupported("an upstream front"))
            return
        self.fleet.maybe_refresh()
        cont = stream.continues if isinstance(stream.continues, Continuation) else None
        first = self.fleet.reserve(self.type, prefer=cont.upstream if cont else None)
        if first is None:
            why = self.fleet.describe()
            stream.sink(Failed(TTSError("unavailable", f"no upstream can take a {self.type} stream now ({why})")))
            return
        run = _Run(stream)
        self._runs.append(run)
        run.future = self.fleet.spawn(self.fleet.run(stream, self.type, first, lambda ev: self._queue(run, ev)))

    def _queue(self, run: _Run, event: StreamEvent) -> None:
        with self._cv:
            self._events.append((run, event))
            self._cv.notify()

    def step(self) -> None:
        with self._cv:
            if not self._events:
                self._cv.wait(TICK_S)
            events, self._events = list(self._events), deque()
        for run, ev in events:
            if run.ended:
                continue
            if isinstance(ev, (Done, Failed)):
                self._end(run)
            run.stream.sink(ev)
        for run in list(self._runs):
            if run.stream.cancel.is_set():
                self._cancel(run, Cancelled())

    def _end(self, run: _Run) -> None:
        run.ended = True
        self._runs.remove(run)

    def _cancel(self, run: _Run, err: TTSError) -> None:
        """Close the upstream's stream now (its coroutine is cancelled on the fleet loop)
        and report ``err``; what the upstream still sends is dropped."""
        self._end(run)
        if run.future is not None:
            self.fleet.loop.call_soon_threadsafe(run.future.cancel)
        run.stream.sink(Failed(err))

    def warmup(self) -> None:
        pass

    def abort_all(self, err: TTSError) -> None:
        for run in list(self._runs):
            self._cancel(run, err)


def opener(fleet: Fleet) -> Any:
    """The registry's ``opener``: "loading" an upstream model is making its backend."""
    def open_entry(entry: ModelEntry) -> tuple[UpstreamModel, UpstreamBackend]:
        model = UpstreamModel(entry, fleet)
        return model, UpstreamBackend(model)
    return open_entry


__all__ = ["UpstreamBackend", "UpstreamModel", "opener"]
