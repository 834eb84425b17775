"""What the daemon's RPC methods share: its parts, its counters, and the status line.

One object, handed to :class:`.service.Service`, :class:`.synthesis.Synthesis` and
:class:`.admin.Admin`, so the method modules depend on it rather than on each other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..config import DaemonConfig
from .models import ModelRegistry
from .notify import Notifier
from .scheduler import Scheduler
from .server import Server
from .sessions import CallSessions
from .voices import VoiceStore


@dataclass(eq=False)
class DaemonState:
    cfg: DaemonConfig
    registry: ModelRegistry
    scheduler: Scheduler
    voices: VoiceStore
    notifier: Notifier
    sessions: CallSessions = field(default_factory=CallSessions)
    fleet: Any = None                      # engine=upstream: the upstream.fleet.Fleet
    server: Server | None = None           # set once the sockets are served
    sockets_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    active_streams: int = 0
    served: int = 0
    _published: str = ""                   # the last STATUS sent

    def all_speakers(self) -> set[str]:
        return {s for e in self.registry.entries.values() for s in e.speakers}

    def publish_status(self) -> None:
        """sd_notify STATUS whenever it changes: the bridge's /health and ``systemctl
        status`` read the daemon's state from it without connecting (which could wake it)."""
        line = self.status_line()
        if line != self._published:
            self._published = line
            self.notifier.status(line)

    def status_line(self) -> str:
        if self.fleet is not None:  # /health (via STATUS) shows the upstreams without connecting
            return f"upstream: {self.fleet.summary()}; {self.active_streams} streams"
        loaded = list(self.registry.loaded)
        if self.registry.loading:
            return f"loading {self.registry.loading}"
        if not loaded:
            return "idle, no model loaded"
        return f"ready: {', '.join(loaded)}; {self.active_streams} streams"
