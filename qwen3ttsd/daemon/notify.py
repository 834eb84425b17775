"""sd_notify(3) without libsystemd: one datagram per call to $NOTIFY_SOCKET.

Silently does nothing when not run by systemd (or an activator that provides a notify
socket). Unknown keys are ignored by old systemd, so EXTEND_TIMEOUT_USEC is safe on 219.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping


class Notifier:
    def __init__(self, env: MutableMapping[str, str] | None = None) -> None:
        addr = (os.environ if env is None else env).pop("NOTIFY_SOCKET", "")
        self._addr: str | None = None
        if addr:
            self._addr = "\0" + addr[1:] if addr.startswith("@") else addr

    def notify(self, **fields: object) -> None:
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items())
        if self._addr is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(self._addr)
                s.sendall(msg.encode())
        except OSError:
            pass  # notification is best effort; never fail the service over it

    def ready(self, status: str) -> None:
        self.notify(ready=1, status=status)

    def status(self, status: str) -> None:
        self.notify(status=status)

    def stopping(self, status: str = "stopping") -> None:
        self.notify(stopping=1, status=status)

    def extend_timeout(self, seconds: float) -> None:
        self.notify(extend_timeout_usec=int(seconds * 1_000_000))
