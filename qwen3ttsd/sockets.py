"""Unix-socket plumbing that the daemon and the bridge's activator share.

Both may have to bind ``tts.sock``/``admin.sock`` themselves (no systemd), and both must
never steal a socket another process still serves. The helpers live at the package root,
stdlib only, so the activator (imported by the always-on bridge) needs nothing from
``qwen3ttsd.daemon``.
"""

from __future__ import annotations

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


def refuse(sock: socket.socket, e: TTSError) -> None:
    """Tell a connection why it is not served (one ``$/error`` notification, if the buffer
    takes it at once), then close it: over the connection cap, a daemon that cannot start,
    an activator backing off. The client raises ``e`` instead of "closed the connection"."""
    try:
        sock.setblocking(False)
        sock.send(P.notification(P.N_ERROR, [e.to_wire()]))
        while sock.recv(65536):   # unread bytes at close would reset the peer before it reads why
            pass
    except OSError:
        pass
    sock.close()


def refuse_pending(listener: socket.socket, e: TTSError) -> None:
    """:func:`refuse` every connection already waiting on ``listener`` (non-blocking)."""
    listener.setblocking(False)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:   # none left (BlockingIOError), or the listener is gone
            return
        refuse(conn, e)
