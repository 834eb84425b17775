"""Client library for the daemon's Unix sockets: async (the bridge) and sync (ctl, apps).

    async with AsyncClient("/run/qwen3ttsd/tts.sock") as c:
        async for event in c.synthesize(text="Hello", voice="ryan", format="pcm16"):
            if event.kind == "chunk": play(event.audio)
        print(event.result)        # the last event carries the summary

A synthesize stream is one request; the daemon answers with notifications then exactly one
response. Closing the connection (or ``cancel``) stops the generation in the daemon.

Backpressure: each stream buffers at most ``STREAM_BUFFER`` events. When a consumer stops
reading, the connection's reader stops reading the socket, the daemon's writes block, and
its ``stall_timeout`` decides - memory here never grows with an unread stream.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import protocol as P
from .errors import TTSError
from .messages import NOTIFICATIONS, Cancel, Caption, Chunk, Hello, Progress, Start, Synthesize

DEFAULT_SOCKET = "/run/qwen3ttsd/tts.sock"
DEFAULT_ADMIN_SOCKET = "/run/qwen3ttsd/admin.sock"
STREAM_BUFFER = 8       # events (audio chunks) held per stream before we stop reading
READ_AHEAD = 64 * 1024  # socket bytes buffered beyond the frame being read (asyncio pauses at 2x)
# what the reader hands a stream: ("event", Event, None) | ("response", error, result) | ("closed", exc, None)
Item = tuple[str, Any, Any]


class ConnectionLost(TTSError):
    """The daemon could not be reached or went away without answering (crash, exit): the
    request may not have run at all, so it is safe to send again if no audio arrived."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


@dataclass
class Event:
    """One step of a stream: kind is progress | start | chunk | segment | result; ``message``
    is the typed notification (``messages.Progress/Start/Chunk/Caption``), None for the result."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    audio: bytes = b""
    seq: int = -1
    message: Progress | Start | Chunk | Caption | None = None


_KINDS = {Progress: "progress", Start: "start", Chunk: "chunk", Caption: "segment"}


def _event_from_notification(method: str, params: Any) -> tuple[int, Event] | None:
    cls = NOTIFICATIONS.get(method)
    n = cls.from_wire(params) if cls is not None and isinstance(params, list) else None
    if n is None:
        return None
    if isinstance(n, Chunk):
        return n.msgid, Event("chunk", {"audio": n.audio}, audio=n.audio, seq=n.seq, message=n)
    return n.msgid, Event(_KINDS[type(n)], n.to_wire()[1], message=n)


def _params(request: Synthesize | None, params: dict[str, Any]) -> dict[str, Any]:
    """A typed request's wire map, or the caller's map as given (the daemon validates)."""
    return {**request.to_wire(), **params} if request is not None else params


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
        try:
            while True:
                msg = await P.read_frame(self._reader, self.max_frame)
                if msg is None:
                    raise ConnectionLost("daemon closed the connection")
                if not isinstance(msg, list) or not msg:
                    continue
                if msg[0] == P.RESPONSE and len(msg) == 4:
                    q = self._queues.pop(msg[1], None)  # answered: a later hang-up is not its end
                    if q is not None:
                        await q.put(("response", msg[2], msg[3]))
                elif msg[0] == P.NOTIFICATION and len(msg) == 3:
                    got = _event_from_notification(msg[1], msg[2])
                    q = self._queues.get(got[0]) if got else None
                    if got is not None and q is not None:
                        await q.put(("event", got[1], None))  # waits while the consumer lags
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as e:  # noqa: BLE001 - fan the failure out to every waiter
            self._closed_exc = e if isinstance(e, TTSError) else ConnectionLost(f"connection lost: {e}")
            for q in self._queues.values():
                _put_last(q, ("closed", self._closed_exc, None))

    async def _send(self, data: bytes) -> None:
        if self._writer is None:
            raise TTSError("unavailable", "not connected")
        if self._closed_exc is not None:
            raise self._closed_exc
        self._writer.write(data)
        await self._writer.drain()

    async def stream(self, method: str, params: dict[str, Any] | None = None) -> AsyncGenerator[Event, None]:
        """Yield progress/start/chunk events, then one Event('result'). Raises TTSError."""
        msgid = next(self._ids) & 0xFFFFFFFF
        q: asyncio.Queue[Item] = asyncio.Queue(STREAM_BUFFER)
        self._queues[msgid] = q
        done = False
        try:
            await self._send(P.request(msgid, method, params))
            while True:
                kind, a, b = await q.get()
                if kind == "event":
                    yield a
                elif kind == "response":
                    done = True
                    if a is not None:
                        raise TTSError.from_wire(a)
                    yield Event("result", b if isinstance(b, dict) else {"value": b})
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
        result: Any = None
        async for ev in self.stream(method, params):
            if ev.kind == "result":
                result = ev.data.get("value", ev.data) if set(ev.data) == {"value"} else ev.data
        return result

    def synthesize(self, request: Synthesize | None = None, **params: Any) -> AsyncGenerator[Event, None]:
        return self.stream(Synthesize.method, _params(request, params))

    async def hello(self, client: str = "qwen3ttsd.client") -> dict[str, Any]:
        info: dict[str, Any] = await self.call(Hello.method, Hello(proto=P.PROTOCOL_VERSION, client=client).to_wire())
        return info


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

    def stream(self, method: str, params: dict[str, Any] | None = None) -> Iterator[Event]:
        msgid = next(self._ids)
        self.sock.sendall(P.request(msgid, method, params))
        while True:
            msg = P.read_frame_sync(self.sock, self.max_frame)
            if msg is None:
                raise ConnectionLost("daemon closed the connection")
            if msg[0] == P.RESPONSE and msg[1] == msgid:
                if msg[2] is not None:
                    raise TTSError.from_wire(msg[2])
                yield Event("result", msg[3] if isinstance(msg[3], dict) else {"value": msg[3]})
                return
            if msg[0] == P.NOTIFICATION:
                got = _event_from_notification(msg[1], msg[2])
                if got and got[0] == msgid:
                    yield got[1]

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        result: Any = None
        for ev in self.stream(method, params):
            if ev.kind == "result":
                result = ev.data.get("value", ev.data) if set(ev.data) == {"value"} else ev.data
        return result

    def synthesize(self, request: Synthesize | None = None, **params: Any) -> Iterator[Event]:
        return self.stream(Synthesize.method, _params(request, params))
