"""``qwen3tts-bridge``: serve the HTTP/WebSocket API with uvicorn.

    qwen3tts-bridge                         # systemd: the daemon is socket-activated
    qwen3tts-bridge --activate              # containers: also act as the daemon's activator
    qwen3tts-bridge --fd 3                  # serve on an inherited listening socket
    qwen3tts-bridge --wyoming tcp://0.0.0.0:10200   # also Wyoming TTS for Home Assistant
"""

from __future__ import annotations

import argparse
import logging
import shlex
import socket
import sys
from typing import Any

from .. import __version__, config


def ws_max_size(cfg: config.BridgeConfig) -> int:
    """The largest WebSocket message: one text message of ``max_input_chars``, each
    character a JSON escape at worst (guard.text_bytes), plus the envelope. Bigger closes
    with 1009."""
    from .guard import text_bytes

    return text_bytes(cfg.max_input_chars) + 16 * 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="qwen3tts-bridge", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    ap.add_argument("--fd", type=int, help="listening socket fd to serve (socket activation)")
    ap.add_argument("--runtime-dir", help="directory of tts.sock / admin.sock")
    ap.add_argument("--activate", action="store_true", default=None,
                    help="hold the daemon sockets and spawn qwen3ttsd on demand (no systemd)")
    ap.add_argument("--daemon-command", help="command --activate runs (default: qwen3ttsd)")
    ap.add_argument("--api-key")
    ap.add_argument("--wyoming", metavar="URI",
                    help="also serve Wyoming TTS (Home Assistant): tcp://0.0.0.0:10200 or unix://PATH")
    ap.add_argument("--wyoming-zeroconf", nargs="?", const="1", metavar="NAME",
                    help="announce the Wyoming server over mDNS (zeroconf) for Home Assistant discovery")
    ap.add_argument("--log-level")
    ap.add_argument("--version", action="version", version=__version__)
    a = vars(ap.parse_args(argv))
    cfg = config.load(config.BridgeConfig, "bridge", a)
    logging.basicConfig(stream=sys.stderr, level=cfg.log_level.upper(),
                        format="%(levelname)s %(name)s: %(message)s")
    import uvicorn

    from .app import create_app

    activator = None
    if cfg.activate:
        from ..activator import Activator

        cmd = shlex.split(cfg.daemon_command) if cfg.daemon_command else \
            [sys.executable, "-m", "qwen3ttsd.daemon.main"]
        activator = Activator(cfg.runtime_dir, cmd, tts_path=cfg.tts_socket, admin_path=cfg.admin_socket)
        activator.open()  # bind before serving HTTP so the first request finds the socket
    from .listeners import capped_h11, connection_cap, raise_fd_limit

    cap = connection_cap(cfg.max_connections, raise_fd_limit())
    app = create_app(cfg, activator, connection_cap=cap)
    metrics = app.state.bridge.metrics
    kw: dict[str, Any] = dict(log_level=cfg.log_level.lower(), loop="asyncio", ws="websockets-sansio",
                              http=capped_h11(cap, cfg.header_timeout, metrics), timeout_keep_alive=5,
                              ws_max_size=ws_max_size(cfg), access_log=False, lifespan="on")
    if cfg.fd >= 0:
        sock = socket.socket(fileno=cfg.fd)
        uvicorn.run(app, fd=sock.fileno(), **kw)
    else:
        uvicorn.run(app, host=cfg.host, port=cfg.port, **kw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
