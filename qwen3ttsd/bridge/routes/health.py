"""``/health`` (and ``/healthz``) and ``/metrics``: never start the daemon."""

from __future__ import annotations

import os
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ... import __version__, checkpoints
from ..context import bridge


async def health(request: Request) -> Response:
    ctx = bridge(request)
    info: dict[str, Any] = {"status": "ok", "version": __version__,
                            "daemon_socket": os.path.exists(ctx.cfg.tts_socket),
                            "warnings": checkpoints.configured_warnings()}  # no model / random weights
    if ctx.activator is not None:
        info["daemon"] = ctx.activator.info()
    return JSONResponse(info)


async def metrics(request: Request) -> Response:
    ctx = bridge(request)
    extra: dict[str, float] = {}
    if ctx.activator is not None:
        a = ctx.activator.info()
        extra = {"qwen3tts_daemon_spawns_total": a["spawns"], "qwen3tts_daemon_running": int(a["pid"] is not None)}
    return PlainTextResponse(ctx.metrics.render(extra), media_type="text/plain; version=0.0.4")


routes: list[BaseRoute] = [
    Route("/health", health, methods=["GET"]),
    Route("/healthz", health, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
