"""``/v1/audio/speech/stream``: the WebSocket for phone calls (protocol in ``bridge/ws.py``)."""

from __future__ import annotations

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from .. import request_id
from ..context import bridge
from ..facts import STATUS_MAX_AGE_S
from ..ws import speech_stream_ws


async def call_stream(websocket: WebSocket) -> None:  # authorised by the Guard middleware
    ctx = bridge(websocket)
    ctx.metrics.ws_sessions += 1
    if await speech_stream_ws(websocket, ctx.cfg, ctx.metrics, request_id.of(websocket)):
        ctx.facts.refresh_soon(STATUS_MAX_AGE_S)  # the call spoke, so the daemon is up: /health learns its state


routes: list[BaseRoute] = [WebSocketRoute("/v1/audio/speech/stream", call_stream)]
