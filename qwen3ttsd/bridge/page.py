"""The web page at ``/`` and its status endpoint.

The page (``static/``: plain HTML/JS/CSS, no build step, nothing from the internet) talks
to the bridge's own API: the WebSocket for speaking, ``/v1/audio/voices`` for the voice
library, and ``GET /v1/status`` for the status panel.

The API key (when set) is checked for all of ``/v1`` by ``guard.Guard``.

``/v1/status`` never wakes the daemon on its own: every connection to the daemon starts it
(socket activation) and postpones its idle exit, so a page left open would keep it alive
for ever. It reports what the bridge knows (the activator's view of the process, the
cache of what the daemon last said). ``/v1/status?refresh=1`` asks the daemon for live
details - the page sends it only when its user clicks *Refresh*, and even then only when
the daemon is known to run or, under systemd (where the bridge cannot tell), because the
user asked.
"""

from __future__ import annotations

import time
from importlib import resources

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..config import BridgeConfig
from ..errors import TTSError
from .facts import DaemonFacts

STATIC = resources.files("qwen3ttsd.bridge") / "static"
_STARTED = time.time()


def page_routes(cfg: BridgeConfig, facts: DaemonFacts) -> list[BaseRoute]:
    async def index(request: Request) -> Response:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})

    async def status(request: Request) -> Response:
        refresh_error = None
        if request.query_params.get("refresh") in ("1", "true") and facts.running() is not False:
            try:
                await facts.refresh(timeout=5.0)
            except (TTSError, TimeoutError, OSError) as e:
                refresh_error = getattr(e, "message", None) or str(e) or type(e).__name__
        daemon = facts.snapshot()
        daemon["refresh_error"] = refresh_error
        metrics = facts.metrics
        bridge = {"version": __version__, "uptime_s": round(time.time() - _STARTED, 1),
                  "api_key_required": bool(cfg.api_key), "wyoming": cfg.wyoming or None,
                  "ws_sessions": getattr(metrics, "ws_sessions", None)}
        return JSONResponse({"bridge": bridge, "daemon": daemon, "now": time.time()},
                            headers={"Cache-Control": "no-store"})

    return [
        Route("/", index, methods=["GET"]),
        Route("/v1/status", status, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
