"""``GET /v1/models`` and ``GET /v1/models/{id}``: OpenAI's Model objects for the OpenAI
model names plus the installed checkpoints (cached 30 s; ``tts.models`` reads config.json
files and never loads torch). An OpenAI name is answered without asking the daemon."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ...errors import TTSError
from ...messages import ModelInfo, Models
from ..context import BridgeContext, bridge
from ..openai_compat import OPENAI_MODELS, model_and_language

CACHE_S = 30.0
OWNER = "qwen3ttsd"


def alias_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNER, "alias": True}


def checkpoint_object(m: ModelInfo) -> dict[str, Any]:
    return {"id": m.name, "object": "model", "created": 0, "owned_by": OWNER, "type": m.type, "loaded": m.loaded}


async def installed(ctx: BridgeContext) -> list[ModelInfo]:
    now = time.monotonic()
    at, cached = ctx.models_cache
    if cached is None or now - at > CACHE_S:
        cached = (await ctx.request(Models())).models
        ctx.models_cache = (now, cached)
    return cached


async def models(request: Request) -> Response:
    ctx = bridge(request)
    data = [alias_object(m) for m in OPENAI_MODELS] + [checkpoint_object(m) for m in await installed(ctx)]
    return JSONResponse({"object": "list", "data": data})


def _is_alias(name: str) -> bool:
    try:
        return model_and_language(name)[0] is None
    except TTSError:
        return False


async def model(request: Request) -> Response:
    ctx = bridge(request)
    name = request.path_params["id"]
    if _is_alias(name):  # every OpenAI name /v1/audio/speech takes, with or without a language suffix
        return JSONResponse(alias_object(name))
    for m in await installed(ctx):
        if m.name == name:
            return JSONResponse(checkpoint_object(m))
    raise TTSError("not_found", f"the model {name!r} does not exist", data={"param": "model"})


routes: list[BaseRoute] = [Route("/v1/models", models, methods=["GET"]),
                           Route("/v1/models/{id:path}", model, methods=["GET"])]
