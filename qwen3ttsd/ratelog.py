"""A log line at most once per interval, with how many were held back.

For errors a peer can provoke as often as it likes (accepts failing with EMFILE, connections
refused at a cap): one line per interval keeps the log readable and its disk bounded - an
fd-exhausted bridge used to write 129 MB of ``accept() out of system resource`` in 25 s.
Light: the daemon and the bridge share it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

INTERVAL = 10.0   # s between two lines of one RateLimitedLog


class RateLimitedLog:
    """``hit()`` logs a warning at most once per interval, then says how many were held back."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self.last = -float("inf")
        self.held = 0

    def hit(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.held += 1
            return
        more = f" (and {self.held} more in the last {now - self.last:.0f} s)" if self.held else ""
        self.logger.warning(msg + more, *args)
        self.last, self.held = now, 0
