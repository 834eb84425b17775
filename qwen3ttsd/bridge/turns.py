"""A call's turn as one running generation: the LLM's text goes to the daemon as it comes.

Why: the clause path (``segments.OrderedSegments``) starts a generation per clause, so a
turn whose words come without punctuation waits for the flush, and prosody restarts at
every clause. A :class:`StreamTurn` is one ``tts.synthesize`` request with ``text_stream``:
its text is sent in ``$/text`` notifications as the client's deltas arrive, and the daemon
speaks it while it arrives (docs/protocol.md, *Streamed text*). It sits in the call's
order like a segment (``index``, ``pieces()``), so audio, captions and markers keep their
order. A daemon that cannot stream text (the sequential backend: ``unsupported``) gets
the whole turn at the flush as one plain request instead, and the call goes on with
clauses (``fell_back``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from ..client import AsyncClient, ConnectionLost
from ..errors import TTSError, is_text_stream_unsupported
from ..messages import Caption, Chunk, Synthesize, SynthesizeResult
from .segments import DaemonStream, Piece

log = logging.getLogger("qwen3tts.bridge.turns")

MAX_TURN_CHARS = 100_000   # one streamed turn's text (about two hours of speech): the bridge holds it all


class StreamTurn:
    """One turn of a call spoken by one running generation (see the module docstring)."""

    def __init__(self, tts_socket: str, index: int, request: Synthesize) -> None:
        self.tts_socket = tts_socket
        self.index = index
        self.request = request
        self.written = ""                     # the turn's text so far (a fallback speaks it)
        self.flushed = asyncio.Event()
        self.fell_back = False
        self.heard = False                    # some of its audio came (no second try after that)
        self.result: SynthesizeResult | None = None
        self._outbox: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()

    @property
    def text(self) -> str:
        return self.written

    def add(self, text: str) -> None:
        """The turn's next text; ``payload_too_large`` past ``MAX_TURN_CHARS`` (the turn goes on)."""
        if len(self.written) + len(text) > MAX_TURN_CHARS:
            raise TTSError("payload_too_large", f"a streamed turn takes at most {MAX_TURN_CHARS} characters; "
                           "flush it and go on in the next turn")
        if text:
            self.written += text
            self._outbox.put_nowait((text, False))

    def flush(self) -> None:
        self.flushed.set()
        self._outbox.put_nowait(("", True))

    async def pieces(self) -> AsyncIterator[Piece]:
        """Audio chunks and captions as the daemon speaks the turn; raises its TTSError.
        A connection lost before any audio (a daemon exiting as the turn began, or one that
        crashed) is tried once more on a new one, with the turn's text so far."""
        for attempt in (1, 2):
            try:
                async for piece in self._speak():
                    yield piece
                return
            except ConnectionLost as e:
                if self.heard or attempt == 2:
                    raise
                log.warning("daemon connection lost before the turn's first audio (%s); retrying once", e.message)
                self._outbox = self._resend()
            except TTSError as e:
                if not is_text_stream_unsupported(e) or self.heard:
                    raise
                self.fell_back = True
                async for piece in self._whole():
                    yield piece
                return

    async def _speak(self) -> AsyncIterator[Piece]:
        """One streamed request for the turn (:attr:`heard` turns True with its first audio)."""
        async with AsyncClient(self.tts_socket, connect_timeout=10) as client:
            items, send_text = client.synthesize_streamed(self.request)
            sender = asyncio.create_task(self._send(send_text))
            try:
                async with contextlib.aclosing(items) as stream:
                    async for item in stream:
                        if isinstance(item, (Chunk, Caption)):
                            self.heard = self.heard or isinstance(item, Chunk) and bool(item.audio)
                            yield item
                        elif isinstance(item, SynthesizeResult):
                            self.result = item
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender

    def _resend(self) -> asyncio.Queue[tuple[str, bool]]:
        """A new outbox for a second connection: the turn's text so far, its flush if it came
        (text added from now on follows as usual)."""
        box: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        if self.written:
            box.put_nowait((self.written, False))
        if self.flushed.is_set():
            box.put_nowait(("", True))
        return box

    async def _send(self, send_text: Callable[[str, bool], Awaitable[None]]) -> None:
        while True:
            text, flush = await self._outbox.get()
            await send_text(text, flush)
            if flush:
                return

    async def _whole(self) -> AsyncIterator[Piece]:
        """The clause path's way: the whole turn at the flush, as one plain request."""
        await self.flushed.wait()
        if not self.written.strip():
            return
        ds = await DaemonStream(self.tts_socket, dataclasses.replace(self.request, text=self.written,
                                                                     text_stream=False)).open()
        async with contextlib.aclosing(ds.pieces()) as pieces:
            async for piece in pieces:
                yield piece
        self.result = ds.result


__all__ = ["MAX_TURN_CHARS", "StreamTurn"]
