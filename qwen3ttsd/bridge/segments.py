"""One utterance spoken as a sequence of daemon requests, audio strictly in order.

Streaming text (an LLM's deltas) becomes segments as soon as a clause ends. Each segment
is its own ``tts.synthesize`` request, sent as soon as the segment is known - but only
after the previous one reached the daemon's queue, so the daemon sees them in order - and
all carry one ``session`` id so the daemon continues a single codec stream: the joins are
sample-continuous. Audio is yielded segment by segment, never interleaved.

Cancelling (or a consumer that stops iterating) closes every daemon connection, which
stops the generations in the daemon within a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any, AsyncIterator

from ..client import STREAM_BUFFER, AsyncClient, ConnectionLost
from ..errors import TTSError

# What a segment's queue carries: audio (bytes) and captions (dicts), then None (done) or the error.
Audio = bytes | dict[str, Any] | TTSError | None


async def fetch_in_order(tts_socket: str, params: dict[str, Any], audio: asyncio.Queue[Audio],
                         prev: asyncio.Event | None, queued: asyncio.Event) -> None:
    """Run one segment's daemon request: its audio chunks (bytes) and captions (dicts) go
    into ``audio``, then None (done) or a TTSError. It is sent once ``prev`` is set (the
    previous segment is in the daemon's queue) and sets ``queued`` when its own is, so the
    daemon sees a call's requests in order. ``audio`` should be bounded: a consumer that
    lags then stops the daemon stream (backpressure) instead of growing memory. A daemon
    that dies before the first audio costs one transparent retry."""
    try:
        if prev is not None:
            await prev.wait()
        if await _synthesize_into(tts_socket, params, audio, queued, retry=True) is None:
            await _synthesize_into(tts_socket, params, audio, queued, retry=False)
        await audio.put(None)
    except TTSError as e:
        await audio.put(e)
    except asyncio.CancelledError:
        raise
    except OSError as e:  # the daemon went away mid-request (crash, restart)
        await audio.put(TTSError("unavailable", f"daemon connection lost: {e}"))
    except Exception as e:  # noqa: BLE001 - reported to the consumer, in order
        await audio.put(TTSError("internal", f"{type(e).__name__}: {e}"))
    finally:
        queued.set()  # never hold up the next segment


async def _synthesize_into(tts_socket: str, params: dict[str, Any], audio: asyncio.Queue[Audio], queued: asyncio.Event,
                           retry: bool) -> int | None:
    """Audio chunks into ``audio``; their count, or None if the connection was lost before
    the first one and ``retry`` allows another try."""
    chunks = 0
    try:
        async with AsyncClient(tts_socket) as c:
            async for ev in c.synthesize(**params):
                queued.set()
                if ev.kind == "chunk":
                    await audio.put(ev.audio)
                    chunks += 1
                elif ev.kind == "segment":
                    await audio.put(ev.data)
    except ConnectionLost:
        if chunks or not retry:
            raise
        return None
    return chunks


class OrderedSegments:
    def __init__(self, tts_socket: str, params: dict[str, Any]) -> None:
        self.tts_socket = tts_socket
        self.params = dict(params, session=uuid.uuid4().hex)
        self._order: asyncio.Queue[asyncio.Queue[Audio] | None] = asyncio.Queue()  # per segment, then None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_queued: asyncio.Event | None = None
        self.count = 0

    def add(self, text: str) -> None:
        """Request ``text`` now (pipelined behind the previous segment)."""
        audio: asyncio.Queue[Audio] = asyncio.Queue(STREAM_BUFFER)  # bounded: backpressure to the daemon
        queued = asyncio.Event()
        self._tasks.append(asyncio.create_task(fetch_in_order(
            self.tts_socket, dict(self.params, text=text), audio, self._last_queued, queued)))
        self._last_queued = queued
        self._order.put_nowait(audio)
        self.count += 1

    def close(self) -> None:
        """No more segments: ``audio()`` ends after the last one."""
        self._order.put_nowait(None)

    async def audio(self) -> AsyncIterator[bytes]:
        """Audio bytes of every segment in order; raises the first segment error."""
        try:
            while (seg := await self._order.get()) is not None:
                while (data := await seg.get()) is not None:
                    if isinstance(data, TTSError):
                        raise data
                    if isinstance(data, bytes) and data:  # (captions are not Wyoming's)
                        yield data
        finally:
            await self.cancel()

    async def cancel(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
