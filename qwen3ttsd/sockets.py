"""Unix-socket plumbing that the daemon and the bridge's activator share.

Both may have to bind ``tts.sock``/``admin.sock`` themselves (no systemd), both must never
steal a socket another process still serves, and both turn callers away with the reason
(:func:`refuse`). The helpers live at the package root (stdlib, the wire protocol and the
error codes), so the activator (imported by the always-on bridge) needs nothing from
``qwen3ttsd.daemon``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path

from . import protocol as P
from .errors import TTSError


def socket_in_use(path: str | os.PathLike[str]) -> bool:
    """Whether something accepts connections on the Unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def bind_unix(path: str | os.PathLike[str], mode: int = 0o660, backlog: int = 512) -> socket.socket:
    """Bind our own listening socket (not activated). Replaces a stale socket node only."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists() or p.is_symlink():
        if not stat.S_ISSOCK(p.lstat().st_mode):
            raise RuntimeError(f"{p} exists and is not a socket")
        if socket_in_use(p):
            raise RuntimeError(f"{p} is in use by another process")
        p.unlink()  # stale
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(p))
    finally:
        os.umask(old)
    os.chmod(p, mode)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


REFUSE_LINGER_S = 1.0   # a refused connection stays open (our side shut) this long before it is closed


def refuse(sock: socket.socket, e: TTSError, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Tell a connection why it is not served (one ``$/error`` notification, if the buffer
    takes it at once) and shut our side: over the connection cap, a daemon that cannot
    start, an activator backing off. The client raises ``e`` instead of "closed the
    connection". With ``loop``, the socket is closed ``REFUSE_LINGER_S`` later: a client
    still writing its request would otherwise get a reset (Linux resets a peer that closes
    with unread bytes; asyncio then drops what was already received)."""
    try:
        sock.setblocking(False)
        sock.send(P.notification(P.N_ERROR, [e.to_wire()]))
        while sock.recv(65536):   # what the client sent already: read, so closing resets nothing
            pass
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    if loop is None:
        sock.close()
    else:
        loop.call_later(REFUSE_LINGER_S, sock.close)


def refuse_pending(listener: socket.socket, e: TTSError, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """:func:`refuse` every connection already waiting on ``listener`` (non-blocking)."""
    listener.setblocking(False)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:   # none left (BlockingIOError), or the listener is gone
            return
        refuse(conn, e, loop)
