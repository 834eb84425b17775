"""Daemon requests as every front end makes them: one place for "retry once" and for "the
ordered segments of one call".

``DaemonStream`` is one ``tts.synthesize`` request, opened (connected, queued, generating)
before anything is handed on, so a failure before the first audio is a clean error; a
daemon that dies before the first audio (crash, OOM kill, restart) costs one transparent
retry. HTTP speaks a whole text as one of these.

``OrderedSegments`` speaks a sequence of texts (an LLM's clauses on a WebSocket call or a
Wyoming stream) as one daemon request each, audio strictly in order. The segments wait
here: at most ``MAX_IN_FLIGHT`` of a call's requests are open in the daemon at once (its
queue is shared by every client: one long turn must not fill it), each sent only after the
previous one reached the daemon's queue, so the daemon sees them in order and, with one
``session`` id on all of them, continues one codec stream (sample-continuous joins). A
segment the daemon refuses as ``busy`` is sent again after a short backoff.

Cancelling (or a consumer that stops iterating) closes the daemon connections, which stops
the generations in the daemon within a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ..client import STREAM_BUFFER, AsyncClient, ConnectionLost, StreamItem
from ..errors import TTSError
from ..messages import Caption, Chunk, Progress, Start, Synthesize, SynthesizeResult

log = logging.getLogger("qwen3tts.bridge.segments")

MAX_IN_FLIGHT = 3                     # a call's daemon requests open at once (the rest wait here)
BUSY_BACKOFF_S = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)   # waits before re-sending a segment refused as busy
Piece = Chunk | Caption               # what a consumer gets of a request: audio and captions


class DaemonStream:
    """One synthesize request. ``open()`` returns once the model generates (or it failed);
    then ``pieces()`` yields its audio chunks and captions and sets ``result``."""

    def __init__(self, tts_socket: str, request: Synthesize, first_byte_timeout: float | None = None,
                 on_queued: Callable[[], None] | None = None) -> None:
        self.tts_socket = tts_socket
        self.request = request
        self.first_byte_timeout = first_byte_timeout
        self.on_queued = on_queued       # called when the request reached the daemon's queue
        self.client = AsyncClient(tts_socket, connect_timeout=10)
        self.items: AsyncGenerator[StreamItem, None] | None = None
        self.buffered: list[StreamItem] = []
        self.start: Start | None = None
        self.result: SynthesizeResult | None = None
        self.t0 = time.monotonic()
        self.first_audio: float | None = None

    async def open(self) -> DaemonStream:
        """Connect and wait until generation has really begun (model loaded) or failed. A
        daemon that dies before that is sent the request once more (the activator or
        systemd starts the next one)."""
        try:
            return await self._open_once()
        except ConnectionLost as e:
            log.warning("daemon connection lost before any audio (%s); retrying once", e.message)
            self.client = AsyncClient(self.tts_socket, connect_timeout=10)
            self.items = None
            self.buffered.clear()
            return await self._open_once()

    async def _open_once(self) -> DaemonStream:
        """Wait for the first audio the model generates (not a container header sent ahead
        of it): anything that fails before then is a clean error, not a cut-off stream."""
        await self.client.connect()
        self.items = self.client.synthesize(self.request)
        generating = False
        try:
            while True:
                item = await self._next()
                if item is None:
                    return self
                if self.on_queued is not None:
                    self.on_queued()
                if isinstance(item, Start):
                    self.start = item
                elif isinstance(item, Progress):
                    generating = generating or item.stage == "generating"
                else:
                    self.buffered.append(item)
                    if isinstance(item, SynthesizeResult) or (generating and isinstance(item, Chunk)):
                        return self
        except BaseException:
            await self.close()
            raise

    async def _next(self) -> StreamItem | None:
        assert self.items is not None  # opened
        try:
            return await asyncio.wait_for(self.items.__anext__(), self.first_byte_timeout)
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise TTSError("timeout", "the daemon did not start generating in time") from None

    async def pieces(self) -> AsyncGenerator[Piece, None]:
        """Audio chunks and captions in order; sets ``result`` at the end. Closes itself."""
        assert self.items is not None  # opened
        try:
            while True:
                item = self.buffered.pop(0) if self.buffered else await self._next_live()
                if item is None:
                    return
                if isinstance(item, SynthesizeResult):
                    self.result = item
                    return
                if isinstance(item, Chunk):
                    if self.first_audio is None and item.audio:
                        self.first_audio = time.monotonic() - self.t0
                    yield item
                elif isinstance(item, Caption):
                    yield item
        finally:
            await self.close()

    async def _next_live(self) -> StreamItem | None:
        assert self.items is not None  # opened
        try:
            return await self.items.__anext__()
        except StopAsyncIteration:
            return None

    async def close(self) -> None:
        if self.items is not None:
            with contextlib.suppress(Exception):
                await self.items.aclose()  # sends $/cancel if unfinished
        await self.client.close()


# --- a call's segments ------------------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    """A point in a call's order (e.g. "everything before this was flushed")."""

    name: str


class Segment:
    """One segment of a call: its request, and its audio and captions as they come."""

    def __init__(self, index: int, request: Synthesize) -> None:
        self.index = index
        self.request = request
        self.queue: asyncio.Queue[Piece | TTSError | None] = asyncio.Queue(STREAM_BUFFER)  # backpressure
        self.queued = asyncio.Event()     # its request reached the daemon's queue (or gave up)
        self.result: SynthesizeResult | None = None

    @property
    def text(self) -> str:
        return self.request.text

    async def pieces(self) -> AsyncIterator[Piece]:
        """Its audio chunks and captions in order; raises the segment's TTSError."""
        while (p := await self.queue.get()) is not None:
            if isinstance(p, TTSError):
                raise p
            yield p


class OrderedSegments:
    """A call's segments: ``add`` them as they are known, read them with ``in_order``."""

    def __init__(self, tts_socket: str, max_in_flight: int = MAX_IN_FLIGHT,
                 busy_backoff: tuple[float, ...] = BUSY_BACKOFF_S, first_index: int = 0, held: bool = False) -> None:
        """``held``: send nothing until ``start()`` (an utterance queued behind another)."""
        self.tts_socket = tts_socket
        self.held = held
        self.busy_backoff = busy_backoff
        self.next_index = first_index
        self.count = 0
        self._order: asyncio.Queue[Segment | Marker | None] = asyncio.Queue()   # what the consumer reads
        self._todo: asyncio.Queue[Segment] = asyncio.Queue()                     # not sent yet
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump: asyncio.Task[None] | None = None

    def add(self, request: Synthesize) -> Segment:
        """Speak ``request`` after every segment added before it."""
        seg = Segment(self.next_index, request)
        self.next_index += 1
        self.count += 1
        self._todo.put_nowait(seg)
        self._order.put_nowait(seg)
        if self._pump is None and not self.held:
            self._pump = asyncio.create_task(self._send_in_order())
        return seg

    def add_turn(self, make: Callable[[int], Any]) -> Any:
        """A segment-like item that runs its own request (``turns.StreamTurn``, made with
        its index), in the call's order after everything added before it."""
        item = make(self.next_index)
        self.next_index += 1
        self.count += 1
        self._order.put_nowait(item)
        return item

    def start(self) -> None:
        """Begin sending held segments."""
        self.held = False
        if self._pump is None and not self._todo.empty():
            self._pump = asyncio.create_task(self._send_in_order())

    def mark(self, name: str) -> None:
        """``in_order`` yields a Marker here, after the segments added before it."""
        self._order.put_nowait(Marker(name))

    def close(self) -> None:
        """No more segments: ``in_order`` ends after the last one."""
        self._order.put_nowait(None)

    async def in_order(self) -> AsyncIterator[Segment | Marker]:
        """Segments (read each one's ``pieces()`` before the next) and markers, in order."""
        while (item := await self._order.get()) is not None:
            yield item

    async def audio(self) -> AsyncIterator[bytes]:
        """Just the audio of every segment in order; raises the first segment's error."""
        try:
            async for seg in self.in_order():
                if isinstance(seg, Segment):
                    async for piece in seg.pieces():
                        if isinstance(piece, Chunk) and piece.audio:
                            yield piece.audio
        finally:
            await self.cancel()

    async def _send_in_order(self) -> None:
        prev: Segment | None = None
        while True:
            seg = await self._todo.get()
            await self._slots.acquire()
            if prev is not None:
                await prev.queued.wait()  # the daemon sees a call's requests in order
            task = asyncio.create_task(self._fetch(seg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            prev = seg

    async def _fetch(self, seg: Segment) -> None:
        """Run one segment's request into its queue: pieces, then None or the TTSError."""
        try:
            for backoff in (*self.busy_backoff, None):
                try:
                    ds = await DaemonStream(self.tts_socket, seg.request, on_queued=seg.queued.set).open()
                    async with contextlib.aclosing(ds.pieces()) as pieces:  # a cancel closes the connection
                        async for piece in pieces:
                            await seg.queue.put(piece)
                    seg.result = ds.result
                    break
                except TTSError as e:
                    if e.code != "busy" or backoff is None:
                        raise
                    log.info("segment %d: daemon busy; sending it again in %.1f s", seg.index, backoff)
                    await asyncio.sleep(backoff)
            await seg.queue.put(None)
        except TTSError as e:
            await seg.queue.put(e)
        except asyncio.CancelledError:
            raise
        except OSError as e:  # the daemon went away mid-request (crash, restart)
            await seg.queue.put(TTSError("unavailable", f"daemon connection lost: {e}"))
        except Exception as e:  # noqa: BLE001 - reported to the consumer, in order
            await seg.queue.put(TTSError("internal", f"{type(e).__name__}: {e}"))
        finally:
            seg.queued.set()  # never hold up the next segment
            self._slots.release()

    async def cancel(self) -> None:
        """Stop every request of the call (closing their connections stops the daemon)."""
        tasks = [t for t in (self._pump, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._pump = None
