"""Is the daemon running? Answered without connecting to its sockets, because a connection
*is* what starts a socket-activated daemon, and a status question must not load a model.

systemd knows for the installed service; elsewhere (``make run``, containers: the bridge is
the activator) a daemon is running when a ``qwen3ttsd`` process holds the listening admin
socket, which ``/proc`` shows for processes this user may inspect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .client import DEFAULT_ADMIN_SOCKET

_ACCEPTCON = 0x10000  # /proc/net/unix flag of a listening socket


def systemd_state() -> dict | None:
    """``systemctl show qwen3ttsd.service`` properties, or None without systemd."""
    if shutil.which("systemctl") is None:
        return None
    try:
        out = subprocess.run(["systemctl", "show", "qwen3ttsd.service", "-p",
                              "LoadState,ActiveState,SubState,StatusText,MainPID,MemoryCurrent"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return dict(line.split("=", 1) for line in out.stdout.strip().splitlines() if "=" in line)


def _listening_inode(path: str) -> str | None:
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        f = line.split()
        if len(f) >= 8 and f[7] in (path, os.path.abspath(path)) and int(f[3], 16) & _ACCEPTCON:
            return f[6]
    return None


def _is_daemon(pid: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3]
    except OSError:
        return False
    return any(a == b"qwen3ttsd.daemon.main" or os.path.basename(a) == b"qwen3ttsd" for a in argv)


def _holders_running(inode: str) -> bool | None:
    link = f"socket:[{inode}]"
    unknown = False
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if not _is_daemon(pid):
            continue
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == link for fd in os.listdir(f"/proc/{pid}/fd")):
                return True
        except PermissionError:
            unknown = True
        except OSError:
            continue
    return None if unknown else False


def service_state(admin_socket: str = DEFAULT_ADMIN_SOCKET) -> dict[str, Any]:
    """``{running: True/False/None (cannot tell), status: the daemon's last sd_notify
    STATUS or None, pid}`` - from systemd for the installed service, else from /proc."""
    if admin_socket == DEFAULT_ADMIN_SOCKET:
        sd = systemd_state()
        if sd is not None and sd.get("LoadState") == "loaded":
            return {"running": sd.get("ActiveState") not in ("inactive", "failed"),
                    "status": sd.get("StatusText") or None, "pid": int(sd.get("MainPID") or 0) or None}
    inode = _listening_inode(admin_socket)
    # nobody listens: a connection would fail, not start anything
    running = False if inode is None else _holders_running(inode)
    return {"running": running, "status": None, "pid": None}


def daemon_running(admin_socket: str = DEFAULT_ADMIN_SOCKET) -> bool | None:
    """True/False, or None when this user cannot tell."""
    running: bool | None = service_state(admin_socket)["running"]
    return running
