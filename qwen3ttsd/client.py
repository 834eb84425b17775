"""Client library for the daemon's Unix sockets: async (the bridge) and sync (ctl, apps).

    async with AsyncClient("/run/qwen3ttsd/tts.sock") as c:
        async for item in c.synthesize(text="Hello", voice="ryan", format="pcm16"):
            match item:
                case Chunk(audio=audio): play(audio)
                case SynthesizeResult(): print(item.duration_s)   # the last item: the summary
        voices = await c.request(VoicesList())                     # a VoicesResult

A synthesize stream is one request; the daemon answers with notifications (the typed
``messages.Progress/Start/Chunk/Caption``) then exactly one response (``SynthesizeResult``).
Every other method is request -> response: ``request(msg)`` sends a typed request and
returns its typed result (``messages.RESULTS``); ``call(method, params)`` is the untyped
escape hatch (the raw wire answer). Closing the connection (or ``cancel``) stops the
generation in the daemon.

Backpressure: each stream buffers at most ``STREAM_BUFFER`` events. When a consumer stops
reading, the connection's reader stops reading the socket, the daemon's writes block, and
its ``stall_timeout`` decides - memory here never grows with an unread stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Any, TypeVar, cast

from . import messages as M, protocol as P
from .errors import TTSError
from .messages import (
    Cancel,
    Hello,
    HelloResult,
    Message,
    Notification,
    Result,
    Synthesize,
    SynthesizeResult,
    TextAppend,
)

DEFAULT_SOCKET = "/run/qwen3ttsd/tts.sock"
DEFAULT_ADMIN_SOCKET = "/run/qwen3ttsd/admin.sock"
STREAM_BUFFER = 8       # events (audio chunks) held per stream before we stop reading
READ_AHEAD = 64 * 1024  # socket bytes buffered beyond the frame being read (asyncio pauses at 2x)
# what the reader hands a stream: ("event", notification, None) | ("response", error, result) | ("closed", exc, None)
Item = tuple[str, Any, Any]
StreamItem = Notification | SynthesizeResult   # what ``synthesize`` yields
R = TypeVar("R", bound=Result)
T = TypeVar("T")


class ConnectionLost(TTSError):
    """The daemon could not be reached or went away without answering (crash, exit): the
    request may not have run at all, so it is safe to send again if no audio arrived."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


class _Answer:
    """The raw result that ends ``call``'s stream."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _notification(method: str, params: Any) -> Notification | None:
    cls = M.NOTIFICATIONS.get(method)
    return cls.from_wire(params) if cls is not None and isinstance(params, list) else None


def _refusal(msg: Any) -> TTSError | None:
    """The error in a ``$/error`` notification: why the daemon (or the activator) is about
    to close this connection, or what it made of a broken message."""
    if isinstance(msg, list) and len(msg) == 3 and msg[0] == P.NOTIFICATION and msg[1] == P.N_ERROR:
        return TTSError.from_wire(msg[2][0] if isinstance(msg[2], list) and msg[2] else None)
    return None


def _params(request: Synthesize | None, params: dict[str, Any]) -> dict[str, Any]:
    """A typed request's wire map, or the caller's map as given (the daemon validates)."""
    return {**request.to_wire(), **params} if request is not None else params


def _result(msg: Message[R], raw: Any) -> R:
    return cast(R, M.RESULTS[msg.method].from_wire(raw))


class AsyncClient:
    """One connection; requests may be pipelined and streams multiplexed on it."""

    def __init__(self, path: str = DEFAULT_SOCKET, *, connect_timeout: float = 10.0,
                 max_frame: int = P.MAX_RESPONSE_FRAME) -> None:
        self.path = path
        self.connect_timeout = connect_timeout
        self.max_frame = max_frame
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._queues: dict[int, asyncio.Queue[Item]] = {}
        self._pump: asyncio.Task[None] | None = None
        self._closed_exc: BaseException | None = None

    async def __aenter__(self) -> "AsyncClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        try:
            # asyncio.timeout, not wait_for: a cancel racing a finished connect must not
            # orphan the connection (an open connection keeps the daemon from idling out).
            async with asyncio.timeout(self.connect_timeout):
                self._reader, self._writer = await asyncio.open_unix_connection(self.path, limit=READ_AHEAD)
        except (OSError, asyncio.TimeoutError) as e:
            raise ConnectionLost(f"cannot connect to {self.path}: {e}") from e
        self._pump = asyncio.create_task(self._read_loop())

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        if self._pump is not None:
            self._pump.cancel()
            try:
                await self._pump
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._writer = None

    async def _read_loop(self) -> None:
        assert self._reader is not None  # connected
        refusal: TTSError | None = None   # the daemon's last word before it closes, if it said one
        try:
            while True:
                msg = await P.read_frame(self._reader, self.max_frame)
                if msg is None:
                    raise refusal or ConnectionLost("daemon closed the connection")
                if not isinstance(msg, list) or not msg:
                    continue
                refusal = _refusal(msg) or refusal
                if msg[0] == P.RESPONSE and len(msg) == 4:
                    q = self._queues.pop(msg[1], None)  # answered: a later hang-up is not its end
                    if q is not None:
                        await q.put(("response", msg[2], msg[3]))
                elif msg[0] == P.NOTIFICATION and len(msg) == 3:
                    n = _notification(msg[1], msg[2])
                    q = self._queues.get(n.msgid) if n is not None else None
                    if q is not None:
                        await q.put(("event", n, None))  # waits while the consumer lags
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as e:  # noqa: BLE001 - fan the failure out to every waiter
            self._closed_exc = e if isinstance(e, TTSError) else refusal or ConnectionLost(f"connection lost: {e}")
            for q in self._queues.values():
                _put_last(q, ("closed", self._closed_exc, None))

    async def _send(self, data: bytes) -> None:
        if self._writer is None:
            raise TTSError("unavailable", "not connected")
        if self._closed_exc is not None:
            raise self._closed_exc
        try:
            self._writer.write(data)
            await self._writer.drain()
        except ConnectionError as e:  # the daemon went away between connect and send
            raise ConnectionLost(f"connection lost: {e}") from None

    async def _stream(self, method: str, params: dict[str, Any] | None,
                      finish: Callable[[Any], T], msgid: int | None = None,
                      sent: asyncio.Event | None = None) -> AsyncGenerator[Notification | T, None]:
        """Yield the request's notifications, then ``finish(result)`` (``sent`` is set once
        the request is on its way). Raises TTSError."""
        msgid = next(self._ids) & 0xFFFFFFFF if msgid is None else msgid
        q: asyncio.Queue[Item] = asyncio.Queue(STREAM_BUFFER)
        self._queues[msgid] = q
        done = False
        try:
            await self._send(P.request(msgid, method, params))
            if sent is not None:
                sent.set()
            while True:
                kind, a, b = await q.get()
                if kind == "event":
                    yield a
                elif kind == "response":
                    done = True
                    if a is not None:
                        raise TTSError.from_wire(a)
                    yield finish(b)
                    return
                else:
                    done = True
                    raise a
        finally:
            self._queues.pop(msgid, None)
            if not done and self._closed_exc is None and self._writer is not None:
                # The consumer went away mid-stream: tell the daemon to stop generating.
                try:
                    self._writer.write(P.notification(Cancel.method, Cancel(msgid).to_wire()))
                except Exception:  # noqa: BLE001
                    pass

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Untyped: the daemon's raw answer to ``method``."""
        async with contextlib.aclosing(self._stream(method, params, _Answer)) as items:
            async for item in items:
                if isinstance(item, _Answer):
                    return item.value
        return None

    async def request(self, msg: Message[R]) -> R:
        """A typed request -> its typed result (``messages.RESULTS``)."""
        return _result(msg, await self.call(msg.method, msg.to_wire()))

    def synthesize(self, request: Synthesize | None = None,
                   **params: Any) -> AsyncGenerator[StreamItem, None]:
        """Progress/Start/Chunk/Caption notifications, then one ``SynthesizeResult``."""
        return self._stream(Synthesize.method, _params(request, params), SynthesizeResult.from_wire)

    def synthesize_streamed(self, request: Synthesize) -> tuple[AsyncGenerator[StreamItem, None],
                                                                 Callable[[str, bool], Awaitable[None]]]:
        """A ``text_stream`` request: its items (as :meth:`synthesize`), and
        ``send_text(text, flush)`` that gives it more text (``$/text``; it waits until the
        items are being read: the request goes out first)."""
        msgid = next(self._ids) & 0xFFFFFFFF
        params = _params(dataclasses.replace(request, text_stream=True), {})
        sent = asyncio.Event()

        async def send_text(text: str, flush: bool = False) -> None:
            await sent.wait()
            await self._send(P.notification(TextAppend.method, TextAppend(msgid, text, flush).to_wire()))

        return self._stream(Synthesize.method, params, SynthesizeResult.from_wire, msgid, sent), send_text

    async def hello(self, client: str = "qwen3ttsd.client") -> HelloResult:
        return await self.request(Hello(proto=P.PROTOCOL_VERSION, client=client))

    async def encode(self, msg: M.AudioEncode) -> bytes:
        """pcm16 the client has (24 kHz mono) as a whole file of ``msg.format`` (``audio.encode``)."""
        out = bytearray()
        async with contextlib.aclosing(self._stream(msg.method, msg.to_wire(), M.EncodeResult.from_wire)) as items:
            async for item in items:
                if isinstance(item, M.Chunk):
                    out += item.audio
        return bytes(out)

    async def design_voice(self, name: str, prompt: str, **params: Any) -> M.VoiceInfo:
        """Save a voice described in words (``voices.design``; script_hint, language, seed)."""
        return await self.request(M.VoicesDesign.from_wire({**params, "name": name, "prompt": prompt}))


def _put_last(q: asyncio.Queue[Item], item: Item) -> None:
    """Deliver a terminal item even to a full queue (the stream ends with it anyway)."""
    while q.full():
        q.get_nowait()
    q.put_nowait(item)


class Client:
    """Blocking client (one request at a time) for scripts and qwen3tts-ctl."""

    def __init__(self, path: str = DEFAULT_SOCKET, *, timeout: float | None = 600.0,
                 max_frame: int = P.MAX_RESPONSE_FRAME) -> None:
        self.path = path
        self.max_frame = max_frame
        self._ids = itertools.count(1)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise ConnectionLost(f"cannot connect to {path}: {e}") from e

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _stream(self, method: str, params: dict[str, Any] | None,
                finish: Callable[[Any], T]) -> Iterator[Notification | T]:
        msgid = next(self._ids)
        try:
            self.sock.sendall(P.request(msgid, method, params))
        except OSError:   # refused before it read the request: what it said is still readable
            pass
        refusal: TTSError | None = None
        while True:
            msg = P.read_frame_sync(self.sock, self.max_frame)
            if msg is None:
                raise refusal or ConnectionLost("daemon closed the connection")
            refusal = _refusal(msg) or refusal
            if msg[0] == P.RESPONSE and msg[1] == msgid:
                if msg[2] is not None:
                    raise TTSError.from_wire(msg[2])
                yield finish(msg[3])
                return
            if msg[0] == P.NOTIFICATION:
                n = _notification(msg[1], msg[2])
                if n is not None and n.msgid == msgid:
                    yield n

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Untyped: the daemon's raw answer to ``method``."""
        for item in self._stream(method, params, _Answer):
            if isinstance(item, _Answer):
                return item.value
        return None

    def request(self, msg: Message[R]) -> R:
        """A typed request -> its typed result (``messages.RESULTS``)."""
        return _result(msg, self.call(msg.method, msg.to_wire()))

    def synthesize(self, request: Synthesize | None = None, **params: Any) -> Iterator[StreamItem]:
        """Progress/Start/Chunk/Caption notifications, then one ``SynthesizeResult``."""
        return self._stream(Synthesize.method, _params(request, params), SynthesizeResult.from_wire)

    def hello(self, client: str = "qwen3ttsd.client") -> HelloResult:
        return self.request(Hello(proto=P.PROTOCOL_VERSION, client=client))

    def encode(self, msg: M.AudioEncode) -> bytes:
        """pcm16 the client has (24 kHz mono) as a whole file of ``msg.format`` (``audio.encode``)."""
        return b"".join(item.audio for item in self._stream(msg.method, msg.to_wire(), M.EncodeResult.from_wire)
                        if isinstance(item, M.Chunk))

    def design_voice(self, name: str, prompt: str, **params: Any) -> M.VoiceInfo:
        """Save a voice described in words (``voices.design``; script_hint, language, seed)."""
        return self.request(M.VoicesDesign.from_wire({**params, "name": name, "prompt": prompt}))
