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
