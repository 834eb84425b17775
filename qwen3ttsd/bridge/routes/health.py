"""``/health`` (and ``/healthz``) and ``/metrics``: never start the daemon.

The daemon's state comes from its own sd_notify ``STATUS`` line, which it updates whenever
a model loads or unloads and a stream starts or ends: the activator receives it directly,
systemd shows it as ``StatusText``. Reading it needs no connection - a connection to the
daemon's socket is exactly what starts it. ``source`` says whether the state comes from a
running daemon (``live``) or is what the last daemon said before it exited (``cached``:
the activator keeps it as ``last_status``).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ... import __version__, checkpoints, probe
from ..context import BridgeContext, bridge


async def daemon_state(ctx: BridgeContext) -> dict[str, Any]:
    if ctx.activator is not None:
        state = ctx.activator.info()
        running: bool | None = state["pid"] is not None
    else:  # systemd (or a daemon started by hand): asked without connecting
        state = await asyncio.to_thread(probe.service_state, ctx.cfg.admin_socket)
        running = state["running"]
    state["source"] = "unknown" if running is None else "live" if running else "cached"
    return state


async def health(request: Request) -> Response:
    ctx = bridge(request)
    info: dict[str, Any] = {"status": "ok", "version": __version__,
                            "daemon_socket": os.path.exists(ctx.cfg.tts_socket),
                            "warnings": checkpoints.configured_warnings(),  # no model / random weights
                            "daemon": await daemon_state(ctx)}
    code = 200
    if info["daemon"].get("error"):  # the activator cannot start a daemon: say why, as a failure
        info.update(status="error", error=info["daemon"]["error"])
        code = 503
    ups = upstreams(ctx)
    if ups:  # engine=upstream: each upstream's state, in flight and last error (as of the last refresh)
        info["upstreams"] = ups
        info["upstreams_as_of"] = ctx.facts.at
    return JSONResponse(info, status_code=code)


def upstreams(ctx: BridgeContext) -> list[dict[str, Any]]:
    """The daemon's upstreams from its last ``admin.status`` (refreshed after each synthesis,
    call and Wyoming request: never a connection of its own)."""
    status = ctx.facts.status
    return list(status.upstreams) if status is not None else []


UPSTREAM_METRICS = (("qwen3tts_upstream_in_flight", "in_flight"), ("qwen3tts_upstream_streams_total", "streams"),
                    ("qwen3tts_upstream_completed_total", "completed"), ("qwen3tts_upstream_failed_total", "failed"),
                    ("qwen3tts_upstream_retried_away_total", "retried_away"))


def upstream_metrics(ctx: BridgeContext) -> str:
    lines = []
    for u in upstreams(ctx):
        label = '{upstream="%s"}' % str(u.get("url", "")).replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f"qwen3tts_upstream_up{label} {int(u.get('state') == 'up')}")
        lines += [f"{name}{label} {int(u.get(key) or 0)}" for name, key in UPSTREAM_METRICS]
    return "".join(line + "\n" for line in lines)


async def metrics(request: Request) -> Response:
    ctx = bridge(request)
    extra: dict[str, float] = {}
    if ctx.activator is not None:
        a = ctx.activator.info()
        extra = {"qwen3tts_daemon_spawns_total": a["spawns"], "qwen3tts_daemon_running": int(a["pid"] is not None)}
    return PlainTextResponse(ctx.metrics.render(extra) + upstream_metrics(ctx), media_type="text/plain; version=0.0.4")


routes: list[BaseRoute] = [
    Route("/health", health, methods=["GET"]),
    Route("/healthz", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
