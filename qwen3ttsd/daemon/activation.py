"""Finding the listening sockets an activator passed us (systemd, or the bridge's activator).

The ``LISTEN_FDS`` protocol (sd_listen_fds(3)): fds 3..3+N-1, valid only when
``LISTEN_PID`` is our pid; ``LISTEN_FDNAMES`` names them (absent on systemd < 227, e.g.
Synology's 219, and when the units set no ``FileDescriptorName=``), so a name falls back to
the socket path's stem (``tts.sock`` -> ``tts``). The variables are removed from the
environment so children (ffmpeg) do not inherit them. The same code path serves systemd,
``systemd-socket-activate`` and the bridge's built-in activator. Binding our own sockets
(no activator) is ``qwen3ttsd.sockets``, shared with the activator.
"""

from __future__ import annotations

import logging
import os
import select
import socket
from collections.abc import MutableMapping
from pathlib import Path

log = logging.getLogger("qwen3ttsd.activation")

SD_LISTEN_FDS_START = 3
KNOWN = ("tts", "admin")


def _name_from_socket(sock: socket.socket) -> str | None:
    try:
        addr = sock.getsockname()
    except OSError:
        return None
    if isinstance(addr, str) and addr:
        stem = Path(addr).name.split(".")[0]
        if stem in KNOWN:
            return stem
        if "admin" in Path(addr).name:
            return "admin"
        return "tts"
    return None


def _canonical(name: str) -> str | None:
    n = name.removesuffix(".socket")
    if n in KNOWN:
        return n
    if n in ("qwen3ttsd", "qwen3ttsd-tts"):
        return "tts"
    if n == "qwen3ttsd-admin":
        return "admin"
    return None


def listen_fds(env: MutableMapping[str, str] | None = None, unset: bool = True,
               info: dict[str, dict] | None = None) -> dict[str, socket.socket]:
    """Sockets passed by an activator, keyed 'tts' / 'admin'. Empty if not activated.

    ``info`` (optional) receives, per socket, its fd and how it was identified
    ("name" from LISTEN_FDNAMES, or "address" from getsockname).
    """
    if env is None:
        env = os.environ
    try:
        pid = int(env.get("LISTEN_PID", "0"))
        n = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        pid, n = 0, 0
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    if unset:
        for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(k, None)
    if pid != os.getpid() or n <= 0:
        return {}
    found: dict[str, socket.socket] = {}
    for i in range(n):
        fd = SD_LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
        except OSError as e:
            log.warning("LISTEN_FDS fd %d unusable: %s", fd, e)
            continue
        name = _canonical(names[i]) if i < len(names) else None
        how = "name"
        if name is None:
            name, how = _name_from_socket(sock), "address"
        if name is None or name in found:
            name = "tts" if "tts" not in found else "admin"
        sock.setblocking(False)
        found[name] = sock
        if info is not None:
            info[name] = {"fd": fd, "identified_by": how}
        log.info("activated socket %s: fd %d %s", name, fd, sock.getsockname())
    return found


def caller_waiting(sock: socket.socket | None) -> bool:
    """Whether a connection is already queued on this listening socket (what woke us)."""
    if sock is None:
        return False
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return False
