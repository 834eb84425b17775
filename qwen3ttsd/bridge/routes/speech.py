"""``POST /v1/audio/speech`` (OpenAI) and ``/v1/audio/speech/clone`` (one-shot cloning).

Each request opens its own connection to the daemon and closes it when done (or when the
HTTP client goes away - which cancels the generation in the daemon), so the bridge never
keeps the daemon alive.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ...client import AsyncClient, ConnectionLost, Event
from ...config import BridgeConfig
from ...errors import TTSError
from ...formats import MODEL_RATE, OPENAI_FORMATS, content_type
from ...messages import Synthesize
from .. import openai_compat as oa
from ..context import BridgeContext, bridge
from ..forms import read_form, read_json, upload_bytes

log = logging.getLogger("qwen3tts.bridge")


class DaemonStream:
    """One synthesize stream: opened and validated before any HTTP header is sent, so
    errors become proper 4xx/5xx responses; then iterated for audio."""

    def __init__(self, cfg: BridgeConfig, request: Synthesize) -> None:
        self.cfg = cfg
        self.request = request
        self.client = AsyncClient(cfg.tts_socket, connect_timeout=10)
        self.events: AsyncGenerator[Event, None] | None = None
        self.buffered: list[Event] = []
        self.start: dict[str, Any] = {}
        self.result: dict[str, Any] = {}
        self.t0 = time.monotonic()
        self.first_audio: float | None = None

    async def open(self) -> "DaemonStream":
        """Connect and wait until generation has really begun (model loaded) or failed.

        A daemon that dies before answering (crash, OOM kill) costs the client nothing:
        the request is sent once more, to the daemon the activator starts next."""
        try:
            return await self._open_once()
        except ConnectionLost as e:
            log.warning("daemon connection lost before any audio (%s); retrying once", e.message)
            self.client = AsyncClient(self.cfg.tts_socket, connect_timeout=10)
            self.events = None
            self.buffered.clear()
            return await self._open_once()

    async def _open_once(self) -> "DaemonStream":
        """Wait for the first audio the model generates (not a container header sent
        ahead of it): anything that fails before then is a clean HTTP error, not a
        200 with a cut-off body. It costs nothing: those bytes are the first byte."""
        await self.client.connect()
        self.events = self.client.synthesize(self.request)
        generating = False
        try:
            while True:
                ev = await self._next(self.cfg.first_byte_timeout)
                if ev is None:
                    return self
                if ev.kind == "start":
                    self.start = ev.data
                elif ev.kind in ("chunk", "result", "segment"):
                    self.buffered.append(ev)
                    if ev.kind == "result" or (generating and ev.kind == "chunk"):
                        return self
                elif ev.kind == "progress" and ev.data.get("stage") == "generating":
                    generating = True
        except BaseException:
            await self.close()
            raise

    async def _next(self, timeout: float) -> Event | None:
        assert self.events is not None  # opened
        try:
            return await asyncio.wait_for(self.events.__anext__(), timeout)
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise TTSError("timeout", "the daemon did not start generating in time") from None

    async def audio(self, captions: bool = False) -> AsyncIterator[bytes | dict[str, Any]]:
        """Audio bytes in order (with ``captions``, each segment's span as a dict where it
        ends); sets ``result`` at the end."""
        assert self.events is not None  # opened
        try:
            while self.buffered:
                ev = self.buffered.pop(0)
                if ev.kind == "result":
                    self.result = ev.data
                    return
                if ev.kind == "chunk":
                    yield self._mark(ev.audio)
                elif captions:
                    yield ev.data
            async for ev in self.events:
                if ev.kind == "chunk":
                    yield self._mark(ev.audio)
                elif ev.kind == "segment" and captions:
                    yield ev.data
                elif ev.kind == "result":
                    self.result = ev.data
                    return
        finally:
            await self.close()

    def _mark(self, data: bytes) -> bytes:
        if self.first_audio is None and data:
            self.first_audio = time.monotonic() - self.t0
        return data

    async def close(self) -> None:
        if self.events is not None:
            with contextlib.suppress(Exception):
                await self.events.aclose()  # sends $/cancel if unfinished
        await self.client.close()


async def stream_response(ctx: BridgeContext, msg: Synthesize, rf: str, sf: str) -> Response:
    ds = await DaemonStream(ctx.cfg, msg).open()
    metrics = ctx.metrics
    metrics.active += 1

    async def body() -> AsyncIterator[bytes]:
        try:
            if sf == "sse":
                async for item in ds.audio(captions=True):
                    if isinstance(item, dict):  # captions: where each sentence sits in the audio
                        yield _sse({"type": "speech.segment", **item})
                    elif item:
                        metrics.audio_bytes += len(item)
                        yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(item).decode()})
                frames = int(ds.result.get("frames", 0))
                usage = {"input_tokens": len(msg.text), "output_tokens": frames,
                         "total_tokens": len(msg.text) + frames}
                yield _sse({"type": "speech.audio.done", "usage": usage})
            else:
                async for chunk in ds.audio():
                    assert isinstance(chunk, bytes)  # no captions asked for
                    metrics.audio_bytes += len(chunk)
                    yield chunk
        finally:
            metrics.active -= 1
            if ds.first_audio is not None:
                metrics.first_byte(ds.first_audio)

    media = "text/event-stream" if sf == "sse" else \
        content_type(OPENAI_FORMATS[rf].name, ds.start.get("sample_rate", MODEL_RATE))
    headers = {"X-Sample-Rate": str(ds.start.get("sample_rate", "")), "Cache-Control": "no-store",
               "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type=media, headers=headers)


def _sse(event: dict[str, Any]) -> bytes:
    return ("data: " + json.dumps(event) + "\n\n").encode()


async def speech(request: Request) -> Response:
    ctx = bridge(request)
    msg, rf, sf = oa.speech_params(await read_json(request), ctx.cfg.max_input_chars)
    return await stream_response(ctx, msg, rf, sf)


async def speech_clone(request: Request) -> Response:
    ctx = bridge(request)
    form = await read_form(request, ctx.cfg.max_upload_bytes)
    audio = await upload_bytes(form, ctx.cfg.max_upload_bytes)
    body = oa.form_fields({k: v for k, v in form.items() if isinstance(v, str)})
    ref_text = body.pop("ref_text", "")
    body.setdefault("voice", "clone")
    msg, rf, sf = oa.speech_params(body, ctx.cfg.max_input_chars)
    msg = dataclasses.replace(msg, voice=None, ref_audio=audio, ref_text=ref_text or None)
    return await stream_response(ctx, msg, rf, sf)


routes: list[BaseRoute] = [
    Route("/v1/audio/speech", speech, methods=["POST"]),
    Route("/v1/audio/speech/clone", speech_clone, methods=["POST"]),
]
