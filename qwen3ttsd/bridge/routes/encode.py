"""``POST /v1/audio/encode?format=mp3``: audio the client already has, as a complete file.

The body is pcm16 mono at 24 kHz (OpenAI's ``pcm``, what the page plays); the answer is
that same audio as a whole file of ``format`` (any ``response_format`` of the speech API)
at ``sample_rate`` (default 24000). The page's Download uses it, so an mp3/opus/flac/aac
download is what was heard, not a second synthesis. The encoding happens in the daemon
(``audio.encode``: the bridge never loads numpy or libsndfile); a whole file gets exact
headers (an mp3 states its exact duration). The body is bounded by ``MAX_ENCODE_BYTES``
(about 5.8 minutes) before a byte is read.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...client import AsyncClient
from ...formats import MODEL_RATE, OPENAI_FORMATS, content_type
from ...messages import AudioEncode, bad
from ..context import bridge


async def encode(request: Request) -> Response:
    ctx = bridge(request)
    rf = request.query_params.get("format", "mp3")
    if rf not in OPENAI_FORMATS:
        raise bad(f"format must be one of {sorted(OPENAI_FORMATS)}", "format")
    rate = request.query_params.get("sample_rate", str(MODEL_RATE))
    if not rate.isdigit():
        raise bad("sample_rate must be an integer", "sample_rate")
    audio = await request.body()
    if not audio:
        raise bad("the body must be the audio: pcm16 mono at 24 kHz", "audio")
    msg = AudioEncode.from_wire({"audio": audio, "format": OPENAI_FORMATS[rf].name, "sample_rate": int(rate)},
                                strict=True)
    async with AsyncClient(ctx.cfg.tts_socket) as c:
        data = await c.encode(msg)
    return Response(data, media_type=content_type(OPENAI_FORMATS[rf].name, msg.sample_rate),
                    headers={"Content-Disposition": f'attachment; filename="speech.{rf}"', "Cache-Control": "no-store"})


routes: list[BaseRoute] = [Route("/v1/audio/encode", encode, methods=["POST"])]
