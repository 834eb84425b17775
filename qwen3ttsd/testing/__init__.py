"""Test and benchmark support: tiny checkpoints (``tinymodel``) and small helpers."""

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for test/bench servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
