"""``/v1/audio/voices``: list built-in and saved voices, upload a clone voice, get/delete one."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ...errors import TTSError
from ...messages import VoiceInfo, VoicesAdd, VoicesList, VoicesRemove, bad
from ..context import bridge
from ..forms import read_form, upload_bytes
from ..openai_compat import VOICE_MAP


def clone_object(c: VoiceInfo) -> dict[str, Any]:
    """A saved voice as the API shows it (OpenAI's Voice plus our fields)."""
    return {**c.to_wire(), "id": c.name, "object": "audio.voice"}


async def list_voices(request: Request) -> Response:
    v = await bridge(request).request(VoicesList())
    data = [{"id": c.name, "name": c.name, "object": "audio.voice", "type": "clone",
             "created_at": int(c.created), "ref_text": c.ref_text, "duration_s": c.duration_s} for c in v.clones]
    data += [{"id": s, "name": s, "object": "audio.voice", "type": "builtin"} for s in v.speakers]
    data += [{"id": k, "name": k, "object": "audio.voice", "type": "alias", "speaker": s}
             for k, s in VOICE_MAP.items()]
    return JSONResponse({"object": "list", "data": data})


async def add_voice(request: Request) -> Response:
    ctx = bridge(request)
    form = await read_form(request, ctx.cfg.max_upload_bytes)
    name = form.get("name")
    consent = form.get("consent")
    if not isinstance(name, str) or not name:
        raise bad("'name' is required", "name")
    if not isinstance(consent, str) or not consent.strip():
        raise bad("'consent' is required: confirm the speaker agreed to be cloned", "consent")
    audio = await upload_bytes(form, ctx.cfg.max_upload_bytes)
    ref_text = form.get("ref_text") or form.get("text") or ""
    msg = VoicesAdd(name=name, audio=audio, ref_text=str(ref_text), consent=consent)
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
