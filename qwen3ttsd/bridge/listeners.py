"""Budgets for the bridge's listeners: connection caps, read timeouts, quiet accept errors.

The bridge is always up and often on a LAN, so an idle or half-open connection must not
cost it forever: ~1,100 idle connections used to take every fd of a process under
systemd's default soft limit, and then HTTP, calls and Wyoming all stopped while asyncio
logged ``accept() out of system resource`` in a loop. Here:

* ``raise_fd_limit``: the soft fd limit goes up to the hard one (asyncio uses epoll, not
  select: a large limit costs nothing), and ``connection_cap`` keeps each listener's cap
  within what the limit leaves (every client connection may hold daemon connections too).
* ``capped_h11``: uvicorn's HTTP/1.1 protocol with a connection cap (HTTP and WebSocket
  together: over it a new connection is closed at once) and a header timeout (a request
  head must be complete within ``header_timeout``; uvicorn itself only times out idle
  keep-alive connections *after* a response). uvicorn's ``limit_concurrency`` answers 503
  only once a request arrived, so it does not bound idle connections.
* ``AcceptErrorLog``: the loop's exception handler, at most one line per interval for
  accept errors (``ratelog.RateLimitedLog``: with how many were held back); everything
  else as usual.

Wyoming's cap and idle timeout live in ``wyoming.py``; the numbers in ``config.BridgeConfig``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..ratelog import INTERVAL, RateLimitedLog
from .metrics import Metrics

log = logging.getLogger("qwen3tts.bridge.listeners")

FD_LIMIT_WANTED = 65536      # what the systemd units set (LimitNOFILE); we raise the soft limit to it
FDS_RESERVED = 64            # logs, sockets to the daemon's activator, model files of the page...
FDS_PER_CONNECTION = 4       # two listeners, each client connection may hold a daemon connection
MAX_WAITING_SEGMENTS = 1000  # a call's (or Wyoming request's) segments held in the bridge, ~5 KB each


def raise_fd_limit(wanted: int = FD_LIMIT_WANTED) -> int:
    """Soft RLIMIT_NOFILE -> min(hard, wanted) when it is lower; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("could not raise the fd limit from %d: %s", soft, e)
    return soft


def connection_cap(configured: int, fd_limit: int) -> int:
    """The per-listener cap: as configured, but never more than the fd limit allows."""
    fits = max(16, (fd_limit - FDS_RESERVED) // FDS_PER_CONNECTION)
    if configured > fits:
        log.warning("max_connections %d does not fit the fd limit %d: using %d per listener "
                    "(raise LimitNOFILE)", configured, fd_limit, fits)
    return max(1, min(configured, fits))


class AcceptErrorLog(RateLimitedLog):
    """An event loop exception handler: accept errors (EMFILE, ENFILE, ENOBUFS...) are
    rate-limited; asyncio already pauses accepting for a second after each."""

    def __init__(self, interval: float = INTERVAL) -> None:
        super().__init__(log, interval)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "accept" in str(context.get("message", "")):
            self.hit("%s: %s", context.get("message"), context.get("exception"))
            return
        loop.default_exception_handler(context)


def capped_h11(cap: int, header_timeout: float, metrics: Metrics) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with a connection cap and a header timeout."""
    refusals = RateLimitedLog(log)

    class CappedH11(H11Protocol):
        head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            over = len(self.connections) >= cap  # HTTP and upgraded WebSocket connections
            super().connection_made(transport)
            if over:
                metrics.refused_connection("http")
                refusals.hit("HTTP connection cap (%d) reached: closing new connections", cap)
                transport.abort()
                return
            self._await_head()

        def _await_head(self) -> None:
            self._cancel_head()
            self.head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _cancel_head(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_timed_out(self) -> None:
            self.head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()  # nothing (or half a request head) in header_timeout

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._cancel_head()  # a whole request head arrived

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._await_head()  # keep-alive: the next head has the same budget

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head()
            super().connection_lost(exc)

    return CappedH11
