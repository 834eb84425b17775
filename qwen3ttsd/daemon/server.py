"""Accepting connections, framing, dispatch, and the race-free idle exit.

Accepting is done by hand (``loop.add_reader`` + non-blocking ``accept`` until EAGAIN) and
counted synchronously, so the idle check - which runs in the same single-threaded loop -
can never see "no connections" while an accepted socket waits for its handler. When idle:
``STOPPING=1``, stop watching the listening fds and close our copies (never unlink: the
activator owns the socket files), finish, exit 0. A client that connects from then on
waits in the kernel backlog until the activator starts the next daemon.

Activity (what postpones the idle exit) is a request, a job, or a connection that made one -
except the read-only questions in ``PASSIVE``: the bridge's Wyoming ``describe`` refresh,
``qwen3tts-ctl status`` and the page's status panel ask them of a running daemon every few
seconds, and must not keep it up forever. A connection that asked only those (or nothing
yet) still holds the exit off while it is open, but does not reset the idle clock.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .. import protocol as P
from ..engine.text_feed import MAX_FEED_CHARS
from ..errors import TTSError
from ..messages import AdminCacheList, AdminStatus, Cancel, Hello, Languages, Models, TextAppend, VoicesList
from ..ratelog import RateLimitedLog
from ..sockets import refuse

log = logging.getLogger("qwen3ttsd.server")

# questions about the daemon that are not a use of it: they never reset the idle clock
PASSIVE = frozenset(m.method for m in (Hello, Models, Languages, VoicesList, AdminStatus, AdminCacheList))
ACCEPT_RETRY_S = 1.0        # accept failed (EMFILE...): stop watching the socket this long


def is_passive(msg: Any) -> bool:
    """A request frame for one of the ``PASSIVE`` methods."""
    return isinstance(msg, list) and len(msg) == 4 and msg[0] == P.REQUEST and msg[2] in PASSIVE


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected (captured by the kernel at connect)."""
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))


def is_admin(uid: int, gid: int, admin_group: str) -> bool:
    """root, our own uid, or a member of ``admin_group``."""
    if uid in (0, os.getuid()):
        return True
    try:
        gr = grp.getgrnam(admin_group)
    except KeyError:
        return False
    if gid == gr.gr_gid:
        return True
    try:
        name = pwd.getpwuid(uid).pw_name
        return gr.gr_gid in os.getgrouplist(name, gid)
    except KeyError:
        return False


@dataclass(eq=False)
class Connection:
    kind: str                                # "tts" | "admin"
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int = 0
    uid: int = -1
    admin: bool = False
    jobs: dict[int, Any] = field(default_factory=dict)     # msgid -> Job (for $/cancel)
    # msgid -> $/text that came before its tts.synthesize job existed (text, flush), in order
    early_text: dict[int, list[tuple[str, bool]]] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False
    active: bool = False                     # made a request that is not PASSIVE: it is activity

    async def send(self, data: bytes, timeout: float | None = None) -> None:
        """Write one frame; ``timeout`` bounds the wait for a slow reader."""
        async with self.write_lock:
            if self.closed:
                raise ConnectionResetError("connection closed")
            self.writer.write(data)
            if timeout is None:
                await self.writer.drain()
            else:
                await asyncio.wait_for(self.writer.drain(), timeout)

    def abort(self) -> None:
        """Drop the connection now, unsent data included (``close`` would wait for a
        reader that never reads, keeping the daemon awake)."""
        self.closed = True
        self.writer.transport.abort()


Handler = Callable[[Connection, int, str, dict], Awaitable[None]]


class Server:
    def __init__(self, sockets: dict[str, socket.socket], handler: Handler, *, notifier,
                 idle_timeout: float, conn_idle_timeout: float, admin_group: str,
                 is_busy: Callable[[], bool], drain_timeout: float = 25.0,
                 max_connections: int = 1024, finishing: Callable[[], bool] = lambda: False) -> None:
        self.sockets = sockets
        self.handler = handler
        self.notifier = notifier
        self.idle_timeout = idle_timeout
        self.conn_idle_timeout = conn_idle_timeout
        self.admin_group = admin_group
        self.is_busy = is_busy
        self.finishing = finishing   # background work an idle exit waits for (the weight cache write)
        self.drain_timeout = drain_timeout
        self.max_connections = max_connections
        self.refusals = RateLimitedLog(log)
        self.connections: set[Connection] = set()
        self.pending_accepts = 0
        self.last_activity = time.monotonic()
        self.keepalive_until = 0.0
        self.started = time.monotonic()
        self.stopping = False
        self._done = asyncio.Event()
        self.exit_reason = ""

    # --- lifecycle ---------------------------------------------------------------------

    async def serve(self) -> str:
        loop = asyncio.get_running_loop()
        for kind, s in self.sockets.items():
            s.setblocking(False)
            loop.add_reader(s.fileno(), self._on_readable, kind, s)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, f"signal {sig.name}", True)
        ticker = asyncio.create_task(self._idle_ticker())
        await self._done.wait()
        ticker.cancel()
        return self.exit_reason

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def idle_exit_in(self) -> float | None:
        if self.idle_timeout < 0:
            return None
        until = max(self.last_activity + self.idle_timeout, self.keepalive_until)
        return max(0.0, until - time.monotonic())

    def _active(self) -> bool:
        """Something is using the daemon: the idle clock restarts."""
        return any(c.active for c in self.connections) or self.is_busy()

    def _holding(self) -> bool:
        """Something must be served or finished before an exit (an accepted socket, a
        passive connection, a weight cache being written); it does not restart the idle clock."""
        return bool(self.connections) or self.pending_accepts > 0 or self.finishing()

    async def _idle_ticker(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.1 if self.idle_timeout < 5 else 0.5)
            if self._active():
                self.touch()
                continue
            if self._holding():
                continue
            left = self.idle_exit_in()
            if left is not None and left <= 0:
                # Same loop iteration as the check: nothing can be accepted in between.
                self.request_stop("idle", drain=False)
                return

    def _stop_accepting(self) -> None:
        for s in self.sockets.values():
            try:
                asyncio.get_running_loop().remove_reader(s.fileno())
            except (ValueError, OSError):
                pass
            s.close()  # our fd copy only; the socket file and PID 1's fd stay

    def request_stop(self, reason: str, drain: bool) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.exit_reason = reason
        log.info("stopping: %s", reason)
        self.notifier.stopping(f"stopping: {reason}")
        self._stop_accepting()
        asyncio.get_running_loop().create_task(self._finish(drain))

    async def _finish(self, drain: bool) -> None:
        if drain:
            deadline = time.monotonic() + self.drain_timeout
            # handler tasks too: a request read before the signal may not have queued its job yet
            while (self.is_busy() or any(c.jobs or c.tasks for c in self.connections)) \
                    and time.monotonic() < deadline:
                self.notifier.extend_timeout(10)
                await asyncio.sleep(0.2)
        for c in list(self.connections):
            for t in list(c.tasks):
                t.cancel()
            self._close(c)
        await asyncio.sleep(0)
        self._done.set()

    # --- accepting ---------------------------------------------------------------------

    def _on_readable(self, kind: str, lsock: socket.socket) -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of fds or memory: the socket stays readable, so pause
                self.refusals.hit("accept on %s failed: %s", kind, e)
                self._pause_accepting(kind, lsock)
                return
            if len(self.connections) + self.pending_accepts >= self.max_connections:
                self.refusals.hit("%d connections open: refusing new ones on %s", self.max_connections, kind)
                refuse(conn, TTSError("busy", "too many connections to the daemon; try again later"),
                       asyncio.get_running_loop())
                continue
            self.pending_accepts += 1  # counted before any await: the idle check sees it
            asyncio.get_running_loop().create_task(self._handle(kind, conn))

    def _pause_accepting(self, kind: str, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(lsock.fileno())

        def resume() -> None:
            if not self.stopping:
                loop.add_reader(lsock.fileno(), self._on_readable, kind, lsock)

        loop.call_later(ACCEPT_RETRY_S, resume)

    async def _handle(self, kind: str, sock: socket.socket) -> None:
        try:
            pid, uid, gid = peer_credentials(sock)
        except OSError:
            pid, uid, gid = 0, -1, -1
        sock.setblocking(False)
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=P.MAX_REQUEST_FRAME + 16)
        except OSError:
            self.pending_accepts -= 1
            sock.close()
            return
        conn = Connection(kind, reader, writer, pid=pid, uid=uid,
                          admin=kind == "admin" and is_admin(uid, gid, self.admin_group))
        self.connections.add(conn)
        self.pending_accepts -= 1
        if kind == "admin":
            log.info("admin connection from pid %d uid %d (%s)", pid, uid, "allowed" if conn.admin else "refused")
        try:
            await self._read_loop(conn)
        finally:
            for job in conn.jobs.values():
                job.cancel.set()  # client went away: stop its generations
            for t in list(conn.tasks):
                t.cancel()
            self._close(conn)
            self.connections.discard(conn)
            if conn.active:
                self.touch()

    def _close(self, conn: Connection) -> None:
        if not conn.closed:
            conn.closed = True
            conn.writer.close()

    async def _read_loop(self, conn: Connection) -> None:
        while not conn.closed:
            timeout = None if (conn.jobs or conn.tasks) else self.conn_idle_timeout
            try:
                msg = await asyncio.wait_for(P.read_frame(conn.reader, P.MAX_REQUEST_FRAME), timeout)
            except asyncio.TimeoutError:
                log.debug("closing idle connection (pid %d)", conn.pid)
                return
            except P.ProtocolError as e:
                # The byte stream is no longer in sync: report and hang up this client only.
                await self._send_error_notification(conn, e)
                return
            except (ConnectionError, OSError):
                return
            if msg is None:
                return
            if not is_passive(msg):
                conn.active = True
            if conn.active:
                self.touch()
            await self._dispatch(conn, msg)

    async def _send_error_notification(self, conn: Connection, e: TTSError) -> None:
        try:
            await conn.send(P.notification(P.N_ERROR, [e.to_wire()]), timeout=2)
        except Exception:  # noqa: BLE001
            pass

    async def _dispatch(self, conn: Connection, msg: Any) -> None:
        if isinstance(msg, list) and len(msg) == 3 and msg[0] == P.NOTIFICATION:
            cancel = Cancel.from_wire(msg[2]) if msg[1] == Cancel.method else None
            job = conn.jobs.get(cancel.msgid) if cancel else None
            if job is not None:
                job.cancel.set()
            text = TextAppend.from_wire(msg[2]) if msg[1] == TextAppend.method else None
            job = conn.jobs.get(text.msgid) if text else None
            if text is not None and job is not None and job.text_in is not None:
                try:
                    job.text_in(text.text, text.flush)
                except TTSError as e:  # the request goes on; the client learns why its text was refused
                    await self._send_error_notification(conn, e)
            elif text is not None and text.msgid in conn.early_text:  # its request is still being set up
                early = conn.early_text[text.msgid]
                if sum(len(t) for t, _ in early) + len(text.text) <= MAX_FEED_CHARS:
                    early.append((text.text, text.flush))
            return
        try:
            msgid, method, params = P.parse_request(msg)
        except TTSError as e:
            is_req = isinstance(msg, list) and len(msg) > 1 and msg[0] == P.REQUEST
            bad_id = msg[1] if is_req and isinstance(msg[1], int) and not isinstance(msg[1], bool) \
                and 0 <= msg[1] < 2 ** 32 else None
            if bad_id is None:
                await self._send_error_notification(conn, e)
            else:
                await conn.send(P.response(bad_id, e.to_wire()))
            return
        if method == "tts.synthesize":
            conn.early_text[msgid] = []  # until its handler ends (a text_stream request takes them)
        task = asyncio.create_task(self._run_handler(conn, msgid, method, params))
        conn.tasks.add(task)
        task.add_done_callback(conn.tasks.discard)

    async def _run_handler(self, conn: Connection, msgid: int, method: str, params: dict) -> None:
        try:
            await self.handler(conn, msgid, method, params)
        except asyncio.CancelledError:
            raise
        except TTSError as e:
            await self._reply_error(conn, msgid, e)
        except ConnectionError as e:
            if conn.closed or conn.writer.is_closing():  # the client hung up while answered: ordinary
                log.info("%s: the client went away (%s)", method, type(e).__name__)
            else:
                log.exception("handler %s failed", method)
                await self._reply_error(conn, msgid, TTSError("internal", f"{type(e).__name__}: {e}"))
        except Exception as e:
            log.exception("handler %s failed", method)
            await self._reply_error(conn, msgid, TTSError("internal", f"{type(e).__name__}: {e}"))
        finally:
            conn.early_text.pop(msgid, None)
            if conn.active:
                self.touch()

    @staticmethod
    async def _reply_error(conn: Connection, msgid: int, e: TTSError) -> None:
        try:
            await conn.send(P.response(msgid, e.to_wire()), timeout=5)
        except Exception:  # noqa: BLE001
            pass
