"""The upstreams behind this daemon: what each serves, how loaded and how healthy it is,
and running one segment on the right one.

Routing: a segment goes to an upstream that is up and serves its model type, fewest
outstanding streams first, never beyond the upstream's cap (``?cap=N``, default
``targets.DEFAULT_CAP``); a call's next segment goes back to the upstream that holds its
codec stream (the :class:`Continuation` a segment ends with). Faults: an upstream that
cannot be reached or fails before the first audio is retried once on another; one that
fails after audio ends the stream with a clear error (never silent truncation) and is asked
again what it serves (one cut stream is not a down upstream); an unreachable one is
marked down and probed in the background with exponential backoff.
What each upstream serves is discovered at start and refreshed while requests come in.

All I/O runs on the fleet's own event-loop thread; the backend (engine thread) reserves a
slot under the lock and hands the segment's coroutine over.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..checkpoints import ModelEntry
from ..engine.backend import Audio, Done, Failed, Stream, StreamEvent
from ..engine.request import SynthesisStats
from ..errors import TTSError
from ..formats import FRAME_SAMPLES, MODEL_RATE
from .links import HttpLink, Offer, Result, RpcLink, Unreachable, VoiceMissing, make_link
from .targets import Target

log = logging.getLogger("qwen3ttsd.upstream")

REFRESH_S = 60.0          # rediscover what the upstreams serve at most this often (while serving)
PROBE_FIRST_S = 1.0       # a down upstream is probed after this, doubling ...
PROBE_MAX_S = 30.0        # ... up to this
DISCOVER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Continuation:
    """A segment's end on an upstream: the next segment of the same call continues there."""

    upstream: str
    session: str | None


@dataclass(eq=False)
class Upstream:
    target: Target
    link: RpcLink | HttpLink
    state: str = "unknown"            # unknown | up | down
    offers: list[Offer] = field(default_factory=list)
    in_flight: int = 0
    streams: int = 0                  # started
    completed: int = 0
    failed: int = 0
    retried_away: int = 0             # streams that failed here before audio and went elsewhere
    last_error: str | None = None
    last_error_at: float | None = None
    answered_at: float | None = None  # wall time it last answered a discovery
    probe_in_s: float = PROBE_FIRST_S
    probing: bool = False

    def serves(self, mtype: str) -> Offer | None:
        return next((o for o in self.offers if o.type == mtype), None)

    def status(self) -> dict[str, Any]:
        return {"url": self.target.url, "kind": self.target.kind, "state": self.state, "cap": self.target.cap,
                "in_flight": self.in_flight, "streams": self.streams, "completed": self.completed,
                "failed": self.failed, "retried_away": self.retried_away,
                "models": [{"name": o.name, "type": o.type} for o in self.offers],
                "flavour": getattr(self.link, "flavour", "qwen3ttsd"),
                "last_error": self.last_error, "last_error_at": self.last_error_at,
                "answered_at": self.answered_at}


class Fleet:
    def __init__(self, targets: list[Target]) -> None:
        self.upstreams = [Upstream(t, make_link(t)) for t in targets]
        self.lock = threading.Lock()
        self.on_models: Callable[[dict[str, ModelEntry]], None] | None = None
        self.discovered_at = 0.0
        self._refreshing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="qwen3ttsd-upstream", daemon=True)
        self._thread.start()

    # --- any thread -------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def discover(self, timeout: float = DISCOVER_TIMEOUT_S) -> dict[str, ModelEntry]:
        """Ask every upstream what it serves (blocking; at start)."""
        try:
            self.spawn(self._discover_all()).result(timeout + 1)
        except TimeoutError:
            log.warning("upstream discovery took over %.0f s", timeout)
        return self.entries()

    def entries(self) -> dict[str, ModelEntry]:
        """The models the front offers: each name any up (or not yet known) upstream serves,
        its speakers and languages the union of theirs."""
        out: dict[str, ModelEntry] = {}
        for up in self.upstreams:
            for o in up.offers:
                e = out.get(o.name)
                if e is None:
                    out[o.name] = ModelEntry(o.name, f"upstream:{up.target.url}", o.type, o.size,
                                             list(o.speakers), list(o.languages))
                else:
                    e.speakers[:] = sorted(set(e.speakers) | set(o.speakers))
                    e.languages[:] = sorted(set(e.languages) | set(o.languages), key=lambda x: (x != "auto", x))
        return out

    def room(self, mtype: str) -> int:
        """Free stream slots on the up upstreams serving ``mtype``."""
        return sum(max(0, u.target.cap - u.in_flight) for u in self.upstreams
                   if u.state == "up" and u.serves(mtype))

    def reserve(self, mtype: str, exclude: set[str] = frozenset(),  # type: ignore[assignment]
                prefer: str | None = None) -> tuple[Upstream, Offer] | None:
        """An up upstream serving ``mtype`` with room (``prefer`` first, whatever its load),
        its in-flight count already raised."""
        with self.lock:
            ups = [u for u in self.upstreams if u.state == "up" and u.target.url not in exclude and u.serves(mtype)]
            pick = next((u for u in ups if u.target.url == prefer), None)
            if pick is None:
                free = [u for u in ups if u.in_flight < u.target.cap]
                pick = min(free, key=lambda u: (u.in_flight, u.streams), default=None)
            if pick is None:
                return None
            pick.in_flight += 1
            pick.streams += 1
            offer = pick.serves(mtype)
            assert offer is not None
            return pick, offer

    def release(self, up: Upstream, outcome: str, error: str | None = None) -> None:
        with self.lock:
            up.in_flight -= 1
            if outcome == "completed":
                up.completed += 1
            elif outcome == "failed":
                up.failed += 1
            elif outcome == "retried":
                up.retried_away += 1
            if error:
                up.last_error, up.last_error_at = error, round(time.time(), 3)

    def status(self) -> list[dict[str, Any]]:
        with self.lock:
            return [u.status() for u in self.upstreams]

    def describe(self) -> str:
        """Each upstream's state for an error message: url, state, streams/cap, last error."""
        with self.lock:
            return "; ".join(f"{u.target.url}: {u.state}, {u.in_flight}/{u.target.cap}"
                             + (f", last error {u.last_error}" if u.last_error else "")
                             for u in self.upstreams)

    def none_up(self) -> TTSError:
        """The error while no upstream has said what it serves (all down since the start)."""
        return TTSError("unavailable", f"no upstream is up to serve this ({self.describe()})", retryable=True)

    def summary(self) -> str:
        up = sum(1 for u in self.upstreams if u.state == "up")
        return f"upstreams {up}/{len(self.upstreams)} up, {sum(u.in_flight for u in self.upstreams)} in flight"

    def maybe_refresh(self) -> None:
        """Rediscover in the background when the last discovery is old (called per request,
        so an idle front never wakes its upstreams)."""
        if not self._refreshing and time.monotonic() - self.discovered_at > REFRESH_S:
            self._refreshing = True
            self.spawn(self._discover_all())

    # --- fleet loop ---------------------------------------------------------------------

    async def _discover_all(self) -> None:
        try:
            await asyncio.gather(*(self._discover(u) for u in self.upstreams))
        finally:
            self.discovered_at = time.monotonic()
            self._refreshing = False
        if self.on_models is not None:
            self.on_models(self.entries())

    async def _discover(self, up: Upstream) -> bool:
        try:
            offers = await asyncio.wait_for(up.link.discover(), DISCOVER_TIMEOUT_S)
        except (TTSError, asyncio.TimeoutError, OSError) as e:
            msg = e.message if isinstance(e, TTSError) else f"discovery: {type(e).__name__}: {e}"
            self.mark_down(up, msg)
            return False
        with self.lock:
            up.offers = offers
            if up.state != "up":
                log.info("upstream %s is up: %s", up.target.url, [(o.name, o.type) for o in offers])
            up.state = "up"
            up.answered_at = round(time.time(), 3)
            up.probe_in_s = PROBE_FIRST_S
        return True

    def mark_down(self, up: Upstream, error: str) -> None:
        with self.lock:
            was = up.state
            up.state = "down"
            up.last_error, up.last_error_at = error, round(time.time(), 3)
            start = not up.probing
            up.probing = True
        if was != "down":
            log.warning("upstream %s is down: %s", up.target.url, error)
        if start:
            self._background(self._probe(up))

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` on the fleet loop, holding its task until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe(self, up: Upstream) -> None:
        """Probe a down upstream with exponential backoff until it answers."""
        while True:
            await asyncio.sleep(up.probe_in_s)
            up.probe_in_s = min(PROBE_MAX_S, up.probe_in_s * 2)
            with self.lock:
                up.probing = False          # _discover may mark it down again (and re-arm)
            if await self._discover(up):
                if self.on_models is not None:
                    self.on_models(self.entries())
                return
            with self.lock:
                if up.probing:              # the failed discovery re-armed a probe: that one goes on
                    return
                up.probing = True

    async def run(self, stream: Stream, mtype: str, first: tuple[Upstream, Offer],
                  emit: Callable[[StreamEvent], None]) -> None:
        """Speak ``stream``'s segment on ``first`` (reserved), retrying once elsewhere before
        any audio; ends with exactly one Done or Failed through ``emit``."""
        t0 = time.monotonic()
        tried: set[str] = set()
        pick: tuple[Upstream, Offer] | None = first
        last: TTSError | None = None
        cont = stream.continues if isinstance(stream.continues, Continuation) else None
        while pick is not None:
            up, offer = pick
            tried.add(up.target.url)
            session = None
            if up.target.kind == "unix":   # the upstream daemon keeps the call's codec stream
                session = cont.session if cont is not None and cont.upstream == up.target.url else uuid.uuid4().hex
            stats = SynthesisStats()
            outcome, error = "failed", None
            try:
                await self._speak(up, offer, stream, session, stats, t0, emit)
                outcome = "completed"
                frames = stats.frames or -(-stats.samples // FRAME_SAMPLES)
                stats.frames, stats.total_s = frames, time.monotonic() - t0
                emit(Done(stats, Continuation(up.target.url, session)))
                return
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except Exception as e:  # noqa: BLE001 - every failure is reported, never lost
                err = e if isinstance(e, TTSError) else TTSError("internal", f"upstream {up.target.url}: "
                                                                 f"{type(e).__name__}: {e}")
                error = err.message
                if stats.samples:   # one cut stream: ask it again rather than mark it down
                    self._background(self._discover(up))
                elif isinstance(err, Unreachable):
                    self.mark_down(up, err.message)
                if stats.samples:   # audio went out: the stream cannot be made whole
                    emit(Failed(TTSError("unavailable", f"upstream {up.target.url} failed mid-stream after "
                                         f"{stats.samples / MODEL_RATE:.2f} s of audio: {err.message}",
                                         data={"upstream": up.target.url, "stage": "mid_stream"})))
                    return
                if not err.retryable:
                    emit(Failed(err))
                    return
                outcome, last = "retried", err
                pick = None if len(tried) > 1 else self.reserve(mtype, exclude=tried)
            finally:
                self.release(up, outcome, error)
        assert last is not None
        emit(Failed(TTSError(last.code, last.message + ("" if len(tried) > 1 else " (no other upstream to retry on)"),
                             data={"upstreams_tried": sorted(tried)})))

    async def _speak(self, up: Upstream, offer: Offer, stream: Stream, session: str | None,
                     stats: SynthesisStats, t0: float, emit: Callable[[StreamEvent], None]) -> None:
        result = Result()
        for attempt in (0, 1):
            try:
                agen = up.link.speak(offer, stream.request, stream.voice, session, result)
                try:
                    async for pcm in agen:
                        if stats.first_audio_s is None:
                            stats.first_audio_s = time.monotonic() - t0
                        stats.samples += len(pcm)
                        stats.chunks += 1
                        emit(Audio(pcm))
                finally:
                    await agen.aclose()
                stats.frames = result.frames or 0
                return
            except VoiceMissing:
                if attempt or stats.samples:
                    raise
                log.info("upstream %s lost clone voice %s: uploading it again", up.target.url,
                         stream.voice.name if stream.voice else "?")


__all__ = ["Continuation", "Fleet", "Upstream"]
