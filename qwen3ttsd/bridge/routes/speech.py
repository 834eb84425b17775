"""``POST /v1/audio/speech`` (OpenAI) and ``/v1/audio/speech/clone`` (one-shot cloning).

Each request opens its own connection to the daemon and closes it when done (or when the
HTTP client goes away - which cancels the generation in the daemon), so the bridge never
keeps the daemon alive.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ...errors import TTSError
from ...formats import MODEL_RATE, OPENAI_FORMATS, content_type
from ...messages import Caption, Synthesize
from .. import openai_compat as oa, request_id as request_ids
from ..context import BridgeContext, bridge
from ..facts import STATUS_MAX_AGE_S
from ..forms import read_form, read_json, upload_bytes
from ..segments import DaemonStream


async def stream_response(ctx: BridgeContext, msg: Synthesize, rf: str, sf: str, request_id: str) -> Response:
    ds = await DaemonStream(ctx.cfg.tts_socket, msg, first_byte_timeout=ctx.cfg.first_byte_timeout).open()
    metrics = ctx.metrics
    metrics.active += 1

    first = {"request_id": request_id}  # SSE: the first event names the request

    def sse(event: dict[str, Any]) -> bytes:
        out = _sse({**event, **first})
        first.clear()
        return out

    async def body() -> AsyncIterator[bytes]:
        try:
            async with contextlib.aclosing(ds.pieces()) as pieces:
                async for piece in pieces:
                    if isinstance(piece, Caption):  # SSE only: where each sentence sits in the audio
                        if sf == "sse":
                            yield sse({"type": "speech.segment", **piece.span})
                        continue
                    metrics.audio_bytes += len(piece.audio)
                    if sf != "sse":
                        yield piece.audio
                    elif piece.audio:
                        yield sse({"type": "speech.audio.delta",
                                         "audio": base64.b64encode(piece.audio).decode()})
            if sf == "sse":
                frames = ds.result.frames if ds.result is not None else 0
                usage = {"input_tokens": len(msg.text), "output_tokens": frames,
                         "total_tokens": len(msg.text) + frames}
                yield sse({"type": "speech.audio.done", "usage": usage})
        except TTSError as e:
            if sf != "sse":
                raise  # raw audio cannot carry an error once it has begun: the stream breaks
            yield sse({"type": "error", "error": e.to_wire()})  # e.g. client_stalled
        finally:
            await ds.close()
            ctx.facts.refresh_soon(STATUS_MAX_AGE_S)  # the daemon is up anyway: /health learns its state
            metrics.active -= 1
            if ds.first_audio is not None:
                metrics.first_byte(ds.first_audio)

    rate = ds.start.sample_rate if ds.start is not None else MODEL_RATE
    media = "text/event-stream" if sf == "sse" else content_type(OPENAI_FORMATS[rf].name, rate)
    headers = {"X-Sample-Rate": str(rate) if ds.start is not None else "", "Cache-Control": "no-store",
               "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type=media, headers=headers)


def _sse(event: dict[str, Any]) -> bytes:
    return ("data: " + json.dumps(event) + "\n\n").encode()


def realtime_allowed(ctx: BridgeContext) -> bool:
    """With an API key set, the guard has checked it: the caller holds the key."""
    return bool(ctx.cfg.api_key)


async def speech(request: Request) -> Response:
    ctx = bridge(request)
    msg, rf, sf = oa.speech_params(await read_json(request), ctx.cfg.max_input_chars, realtime_allowed(ctx))
    return await stream_response(ctx, msg, rf, sf, request_ids.of(request))


async def speech_clone(request: Request) -> Response:
    ctx = bridge(request)
    form = await read_form(request, ctx.cfg.max_upload_bytes)
    audio = await upload_bytes(form, ctx.cfg.max_upload_bytes)
    body = oa.form_fields({k: v for k, v in form.items() if isinstance(v, str)})
    ref_text = body.pop("ref_text", "")
    body.setdefault("voice", "clone")
    msg, rf, sf = oa.speech_params(body, ctx.cfg.max_input_chars, realtime_allowed(ctx))
    msg = dataclasses.replace(msg, voice=None, ref_audio=audio, ref_text=ref_text or None)
    return await stream_response(ctx, msg, rf, sf, request_ids.of(request))


routes: list[BaseRoute] = [
    Route("/v1/audio/speech", speech, methods=["POST"]),
    Route("/v1/audio/speech/clone", speech_clone, methods=["POST"]),
]
