"""``GET /v1/models``: the OpenAI model names plus the installed checkpoints (cached 30 s;
``tts.models`` reads config.json files and never loads torch)."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..context import bridge
from ..openai_compat import OPENAI_MODELS

CACHE_S = 30.0


async def models(request: Request) -> Response:
    ctx = bridge(request)
    now = time.monotonic()
    at, installed = ctx.models_cache
    if installed is None or now - at > CACHE_S:
        installed = await ctx.call("tts.models")
        ctx.models_cache = (now, installed)
    data: list[dict[str, Any]] = [{"id": m, "object": "model", "owned_by": "qwen3ttsd", "alias": True}
                                  for m in OPENAI_MODELS]
    data += [{"id": m["name"], "object": "model", "owned_by": "qwen3ttsd", "type": m["type"],
              "loaded": m["loaded"]} for m in installed]
    return JSONResponse({"object": "list", "data": data})


routes: list[BaseRoute] = [Route("/v1/models", models, methods=["GET"])]
