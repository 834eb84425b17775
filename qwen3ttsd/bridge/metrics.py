"""Prometheus text exposition without a client library (a few counters and gauges), and
the middleware that counts every HTTP request by route and status.

Requests the guard refuses never reach a route: they are counted by the guard, by error
code (``qwen3tts_guard_refusals_total``), and connections a listener closes at its cap by
listener (``qwen3tts_connections_refused_total``)."""

from __future__ import annotations

import time
from collections import defaultdict

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"   # one label for every unknown path (no unbounded label set)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.audio_bytes = 0
        self.active = 0
        self.ttfb_sum = 0.0
        self.ttfb_count = 0
        self.ws_sessions = 0
        self.refusals: dict[tuple[str, int], int] = defaultdict(int)   # (error code, status)
        self.refused_connections: dict[str, int] = defaultdict(int)   # listener -> count
        self.started = time.time()

    def observe(self, endpoint: str, status: int) -> None:
        self.requests[(endpoint, status)] += 1

    def refused(self, code: str, status: int) -> None:
        self.refusals[(code, status)] += 1

    def refused_connection(self, listener: str) -> None:
        self.refused_connections[listener] += 1

    def first_byte(self, seconds: float) -> None:
        self.ttfb_sum += seconds
        self.ttfb_count += 1

    def render(self, extra: dict[str, float] | None = None) -> str:
        lines = [
            "# HELP qwen3tts_requests_total HTTP/WS requests by endpoint and status.",
            "# TYPE qwen3tts_requests_total counter",
        ]
        for (ep, st), n in sorted(self.requests.items()):
            lines.append(f'qwen3tts_requests_total{{endpoint="{ep}",status="{st}"}} {n}')
        lines += ["# HELP qwen3tts_guard_refusals_total Requests refused before any endpoint (Host, Origin, "
                  "cross-site, API key, body size).", "# TYPE qwen3tts_guard_refusals_total counter"]
        lines += [f'qwen3tts_guard_refusals_total{{code="{code}",status="{st}"}} {n}'
                  for (code, st), n in sorted(self.refusals.items())]
        lines += ["# HELP qwen3tts_connections_refused_total Connections closed at a listener's cap.",
                  "# TYPE qwen3tts_connections_refused_total counter"]
        lines += [f'qwen3tts_connections_refused_total{{listener="{name}"}} {n}'
                  for name, n in sorted(self.refused_connections.items())]
        lines += [
            "# TYPE qwen3tts_audio_bytes_total counter", f"qwen3tts_audio_bytes_total {self.audio_bytes}",
            "# TYPE qwen3tts_active_streams gauge", f"qwen3tts_active_streams {self.active}",
            "# TYPE qwen3tts_first_audio_seconds summary",
            f"qwen3tts_first_audio_seconds_sum {self.ttfb_sum:.6f}",
            f"qwen3tts_first_audio_seconds_count {self.ttfb_count}",
            "# TYPE qwen3tts_ws_sessions_total counter", f"qwen3tts_ws_sessions_total {self.ws_sessions}",
            "# TYPE qwen3tts_bridge_uptime_seconds gauge",
            f"qwen3tts_bridge_uptime_seconds {time.time() - self.started:.1f}",
        ]
        for k, v in (extra or {}).items():
            lines += [f"# TYPE {k} gauge", f"{k} {v}"]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Counts each HTTP response once, when its status goes out, under the route's path
    template (``/v1/audio/voices/{name}``): GETs, errors and streams alike."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                self.metrics.observe(getattr(route, "path", UNMATCHED), message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)
