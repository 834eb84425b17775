"""What every route needs: the settings, the activator (if this bridge is one), the
metrics, and short daemon calls. One object, kept on ``app.state.bridge``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from starlette.requests import HTTPConnection

from ..client import AsyncClient
from ..config import BridgeConfig
from ..messages import Message, ModelInfo, Result
from .facts import DaemonFacts
from .metrics import Metrics

if TYPE_CHECKING:
    from ..activator import Activator

R = TypeVar("R", bound=Result)


@dataclass
class BridgeContext:
    cfg: BridgeConfig
    activator: Activator | None = None
    metrics: Metrics = field(default_factory=Metrics)
    models_cache: tuple[float, list[ModelInfo] | None] = (0.0, None)   # (when, tts.models answer)
    facts: DaemonFacts = field(init=False)            # what the page and Wyoming know without waking it

    def __post_init__(self) -> None:
        self.facts = DaemonFacts(self.cfg, self.activator, self.metrics)

    async def request(self, msg: Message[R], admin: bool = False, connect_timeout: float = 10.0) -> R:
        """One typed request on its own connection, closed at once (never pins the daemon)."""
        path = self.cfg.admin_socket if admin else self.cfg.tts_socket
        async with AsyncClient(path, connect_timeout=connect_timeout) as c:
            return await c.request(msg)


def bridge(conn: HTTPConnection) -> BridgeContext:
    ctx: BridgeContext = conn.app.state.bridge
    return ctx
