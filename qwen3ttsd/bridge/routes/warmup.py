"""``POST /v1/audio/warmup``: start the daemon and load the model, answer when it is ready.

Voice agents give up on a first sentence that takes too long (Pipecat: 3 s without audio),
and a cold start (daemon start plus model load) can take longer. An app calls this when a
conversation is about to begin - a call connects, a text box gets focus - never on a timer:
each warm-up postpones the daemon's idle exit like any request does, so it is exactly as
costly as one short speech request and needs no more privilege (the data socket's
``tts.warmup``, not the admin socket's ``admin.load``; the API key like the rest of ``/v1``).

The body takes the speech request's routing fields (``model``, ``voice``, ``instructions``,
``language``), so the model that loads is the one that request would use.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ...messages import Warmup, bad
from ..context import bridge
from ..forms import read_json
from ..openai_compat import VOICE_MAP, model_and_language

FIELDS = ("model", "voice", "instructions", "language")


def warmup_message(body: Any) -> Warmup:
    """A warm-up body as the daemon's ``tts.warmup``; names map as ``/v1/audio/speech`` maps them."""
    if not isinstance(body, dict):
        raise bad("request body must be a JSON object")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise bad(f"unknown field {unknown[0]!r}; accepted: {list(FIELDS)}", unknown[0])
    for key in FIELDS:
        if body.get(key) is not None and not isinstance(body[key], (str, dict) if key == "voice" else str):
            raise bad(f"{key} must be a string", key)
    model, language = model_and_language(body.get("model"))
    voice = body.get("voice")
    if isinstance(voice, dict):  # {"id": "my-voice"}, as speech takes it
        voice = voice.get("id")
    if voice is not None and (not isinstance(voice, str) or not voice):
        raise bad("'voice' must be a string or {\"id\": ...}", "voice")
    wire = {"model": model, "language": body.get("language") or language,
            "voice": VOICE_MAP.get(voice.lower(), voice) if voice else None,
            "instructions": body.get("instructions") or None}
    return Warmup.from_wire({k: v for k, v in wire.items() if v is not None}, strict=True)


async def warmup(request: Request) -> Response:
    ctx = bridge(request)
    msg = warmup_message(await read_json(request))
    t0 = time.monotonic()
    r = await ctx.request(msg)  # connecting starts the daemon (socket activation)
    return JSONResponse({"object": "audio.warmup", "ready": True, "model": r.model,
                         "already_loaded": r.was_loaded, "load_s": r.load_s,
                         "elapsed_s": round(time.monotonic() - t0, 3)})


routes: list[BaseRoute] = [Route("/v1/audio/warmup", warmup, methods=["POST"])]
