"""``/v1/audio/voices``: list built-in and saved voices, upload a clone voice or design one from
a description (OpenAI's ``type: "prompt"``), get/delete one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ...errors import TTSError
from ...messages import Bool, VoiceInfo, VoicesAdd, VoicesDesign, VoicesList, VoicesRemove, bad
from ..context import BridgeContext, bridge
from ..forms import read_form, read_json, upload_bytes
from ..openai_compat import VOICE_MAP, form_fields

# type "prompt": OpenAI's fields (``model`` names OpenAI's designer: ignored) and ours
DESIGN_FIELDS = frozenset({"type", "name", "prompt", "script_hint", "model", "language", "seed"})


def clone_object(c: VoiceInfo) -> dict[str, Any]:
    """A saved voice as OpenAI's Voice ``{id, created_at, name, object, type[, prompt]}`` plus
    our fields; ``type`` is ``prompt`` for a designed voice, ``audio_sample`` for an upload."""
    return {**c.to_wire(), "id": c.name, "name": c.name, "object": "audio.voice",
            "created_at": int(c.created), "type": c.type or "audio_sample"}


async def list_voices(request: Request) -> Response:
    v = await bridge(request).request(VoicesList())
    data = [clone_object(c) for c in v.clones]
    data += [{"id": s, "name": s, "object": "audio.voice", "type": "builtin"} for s in v.speakers]
    data += [{"id": k, "name": k, "object": "audio.voice", "type": "alias", "speaker": s}
             for k, s in VOICE_MAP.items()]
    return JSONResponse({"object": "list", "data": data})


async def design_voice(ctx: BridgeContext, fields: Mapping[str, Any]) -> Response:
    """``type: "prompt"``: the daemon's ``voices.design`` (JSON or multipart fields)."""
    unknown = sorted(set(fields) - DESIGN_FIELDS)
    if unknown:
        raise bad(f"unknown field {unknown[0]!r}; accepted: {sorted(DESIGN_FIELDS)}", unknown[0])
    wire = {k: v for k, v in fields.items() if k in VoicesDesign.wire_names() and v not in (None, "")}
    if isinstance(wire.get("seed"), str):  # multipart carries numbers as text
        try:
            wire["seed"] = int(wire["seed"])
        except ValueError:
            raise bad("seed must be an integer", "seed") from None
    info = await ctx.request(VoicesDesign.from_wire(wire, strict=True))
    return JSONResponse(clone_object(info), status_code=201)


async def add_voice(request: Request) -> Response:
    ctx = bridge(request)
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await read_json(request)
        if not isinstance(body, dict):
            raise bad("request body must be a JSON object")
        if body.get("type") != "prompt":
            raise bad("a voice from an audio sample is uploaded as multipart/form-data; "
                      "JSON takes type \"prompt\" (a voice described in words)", "type")
        return await design_voice(ctx, body)
    form = await read_form(request, ctx.cfg.max_upload_bytes)
    if form.get("type") == "prompt":
        return await design_voice(ctx, {k: v for k, v in form.items() if isinstance(v, str)})
    name = form.get("name")
    consent = form.get("consent")
    if not isinstance(name, str) or not name:
        raise bad("'name' is required", "name")
    if not isinstance(consent, str) or not consent.strip():
        raise bad("'consent' is required: confirm the speaker agreed to be cloned", "consent")
    audio = await upload_bytes(form, ctx.cfg.max_upload_bytes)
    ref_text = form.get("ref_text") or form.get("text") or ""
    flags = form_fields({k: v for k, v in form.items() if k == "replace" and isinstance(v, str)}, VoicesAdd)
    replace = Bool().check("replace", flags.get("replace", False), True, None)
    msg = VoicesAdd(name=name, audio=audio, ref_text=str(ref_text), consent=consent, replace=replace)
    info = await ctx.request(msg)
    return JSONResponse(clone_object(info), status_code=201)


async def voices(request: Request) -> Response:
    return await (list_voices(request) if request.method == "GET" else add_voice(request))


async def voice_item(request: Request) -> Response:
    ctx = bridge(request)
    name = request.path_params["name"]
    if request.method == "DELETE":
        await ctx.request(VoicesRemove(name=name))
        return JSONResponse({"id": name, "object": "audio.voice", "deleted": True})
    for c in (await ctx.request(VoicesList())).clones:
        if c.name == name:
            return JSONResponse(clone_object(c))
    raise TTSError("not_found", f"voice {name!r} does not exist")


routes: list[BaseRoute] = [
    Route("/v1/audio/voices", voices, methods=["GET", "POST"]),
    Route("/v1/audio/voices/{name}", voice_item, methods=["GET", "DELETE"]),
]
