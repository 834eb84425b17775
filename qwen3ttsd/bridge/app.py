"""The bridge's HTTP API (Starlette): OpenAI-compatible speech, voices, models, health.

Each request opens its own connection to the daemon and closes it when done (or when the
HTTP client goes away - which cancels the generation in the daemon), so the bridge never
keeps the daemon alive. ``/health`` and ``/metrics`` never touch the daemon socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import time
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute

from .. import __version__, checkpoints
from ..client import AsyncClient, ConnectionLost, Event
from ..config import BridgeConfig
from ..errors import TTSError
from ..formats import MODEL_RATE, OPENAI_FORMATS, content_type
from ..messages import Synthesize
from . import openai_compat as oa
from .guard import BodyTooLarge, Guard
from .http_errors import error_response
from .metrics import Metrics

log = logging.getLogger("qwen3tts.bridge")


class DaemonStream:
    """One synthesize stream: opened and validated before any HTTP header is sent, so
    errors become proper 4xx/5xx responses; then iterated for audio."""

    def __init__(self, cfg: BridgeConfig, request: Synthesize) -> None:
        self.cfg = cfg
        self.request = request
        self.client = AsyncClient(cfg.tts_socket, connect_timeout=10)
        self.events: AsyncIterator[Event] | None = None
        self.buffered: list[Event] = []
        self.start: dict = {}
        self.result: dict = {}
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
                elif ev.kind == "chunk" or ev.kind == "result":
                    self.buffered.append(ev)
                    if ev.kind == "result" or generating:
                        return self
                elif ev.kind == "progress" and ev.data.get("stage") == "generating":
                    generating = True
        except BaseException:
            await self.close()
            raise

    async def _next(self, timeout: float) -> Event | None:
        try:
            return await asyncio.wait_for(self.events.__anext__(), timeout)
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError:
            raise TTSError("timeout", "the daemon did not start generating in time") from None

    async def audio(self) -> AsyncIterator[bytes]:
        """Audio bytes in order; sets ``result`` at the end."""
        try:
            while self.buffered:
                ev = self.buffered.pop(0)
                if ev.kind == "result":
                    self.result = ev.data
                    return
                yield self._mark(ev.audio)
            async for ev in self.events:
                if ev.kind == "chunk":
                    yield self._mark(ev.audio)
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


def create_app(cfg: BridgeConfig, activator=None) -> Starlette:
    metrics = Metrics()
    models_cache: dict[str, Any] = {"at": 0.0, "data": None}

    async def daemon_call(method: str, params: dict | None = None, admin: bool = False) -> Any:
        async with AsyncClient(cfg.admin_socket if admin else cfg.tts_socket) as c:
            return await c.call(method, params or {})

    async def read_json(request: Request) -> dict:
        return oa.parse_json(await request.body())  # size: bounded by the Guard middleware

    async def stream_response(msg: Synthesize, rf: str, sf: str, endpoint: str) -> Response:
        ds = await DaemonStream(cfg, msg).open()
        metrics.active += 1

        async def body() -> AsyncIterator[bytes]:
            try:
                if sf == "sse":
                    n = 0
                    async for chunk in ds.audio():
                        if chunk:
                            n += len(chunk)
                            metrics.audio_bytes += len(chunk)
                            yield ("data: " + json.dumps({"type": "speech.audio.delta",
                                                          "audio": base64.b64encode(chunk).decode()}) + "\n\n").encode()
                    r = ds.result
                    usage = {"input_tokens": len(msg.text), "output_tokens": int(r.get("frames", 0)),
                             "total_tokens": len(msg.text) + int(r.get("frames", 0))}
                    yield ("data: " + json.dumps({"type": "speech.audio.done", "usage": usage}) + "\n\n").encode()
                else:
                    async for chunk in ds.audio():
                        metrics.audio_bytes += len(chunk)
                        yield chunk
            finally:
                metrics.active -= 1
                if ds.first_audio is not None:
                    metrics.first_byte(ds.first_audio)

        metrics.observe(endpoint, 200)
        media = "text/event-stream" if sf == "sse" else \
            content_type(OPENAI_FORMATS[rf].name, ds.start.get("sample_rate", MODEL_RATE))
        headers = {"X-Sample-Rate": str(ds.start.get("sample_rate", "")), "Cache-Control": "no-store",
                   "X-Accel-Buffering": "no"}
        return StreamingResponse(body(), media_type=media, headers=headers)

    def handled(endpoint: str):
        def deco(fn):
            async def wrapper(request: Request) -> Response:
                try:
                    return await fn(request)
                except TTSError as e:
                    metrics.observe(endpoint, e.http_status)
                    return error_response(e)
            return wrapper
        return deco

    @handled("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        body = await read_json(request)
        msg, rf, sf = oa.speech_params(body, cfg.max_input_chars)
        return await stream_response(msg, rf, sf, "/v1/audio/speech")

    async def read_form(request: Request):  # size: bounded by the Guard middleware
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise oa.bad("expected multipart/form-data")
        try:
            form = await request.form(max_files=2, max_fields=32, max_part_size=cfg.max_upload_bytes)
        except (TTSError, BodyTooLarge):
            raise
        except Exception as e:  # noqa: BLE001 - starlette raises its own types for limits
            msg = str(getattr(e, "detail", e))
            code = "payload_too_large" if "size" in msg.lower() or "large" in msg.lower() else "bad_request"
            raise TTSError(code, f"bad upload: {msg}") from None
        return form

    async def upload_bytes(form, field: str = "file") -> bytes:
        f = form.get(field) or form.get("audio") or form.get("audio_sample")
        if f is None or isinstance(f, str):
            raise oa.bad(f"an audio file is required in '{field}'", field)
        data = await f.read()
        if len(data) > cfg.max_upload_bytes:
            raise TTSError("payload_too_large", f"upload larger than {cfg.max_upload_bytes} bytes")
        if not data:
            raise oa.bad("the uploaded file is empty", field)
        return data

    @handled("/v1/audio/voices")
    async def voices(request: Request) -> Response:
        if request.method == "GET":
            v = await daemon_call("voices.list")
            data = [{"id": c["name"], "name": c["name"], "object": "audio.voice", "type": "clone",
                     "created_at": int(c.get("created", 0)), "ref_text": c.get("ref_text", ""),
                     "duration_s": c.get("duration_s")} for c in v["clones"]]
            data += [{"id": s, "name": s, "object": "audio.voice", "type": "builtin"} for s in v["speakers"]]
            data += [{"id": k, "name": k, "object": "audio.voice", "type": "alias", "speaker": s}
                     for k, s in oa.VOICE_MAP.items()]
            return JSONResponse({"object": "list", "data": data})
        form = await read_form(request)
        name = form.get("name")
        consent = form.get("consent")
        if not isinstance(name, str) or not name:
            raise oa.bad("'name' is required", "name")
        if not isinstance(consent, str) or not consent.strip():
            raise oa.bad("'consent' is required: confirm the speaker agreed to be cloned", "consent")
        audio = await upload_bytes(form)
        ref_text = form.get("ref_text") or form.get("text") or ""
        info = await daemon_call("voices.add", {"name": name, "audio": audio, "ref_text": ref_text,
                                                "consent": consent})
        metrics.observe("/v1/audio/voices", 201)
        return JSONResponse({"id": info["name"], "object": "audio.voice", **info}, status_code=201)

    @handled("/v1/audio/voices/{name}")
    async def voice_item(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            await daemon_call("voices.remove", {"name": name})
            return JSONResponse({"id": name, "object": "audio.voice", "deleted": True})
        v = await daemon_call("voices.list")
        for c in v["clones"]:
            if c["name"] == name:
                return JSONResponse({"id": name, "object": "audio.voice", **c})
        raise TTSError("not_found", f"voice {name!r} does not exist")

    @handled("/v1/audio/speech/clone")
    async def speech_clone(request: Request) -> Response:
        form = await read_form(request)
        audio = await upload_bytes(form)
        body = oa.form_fields({k: v for k, v in form.items() if isinstance(v, str)})
        ref_text = body.pop("ref_text", "")
        body.setdefault("voice", "clone")
        msg, rf, sf = oa.speech_params(body, cfg.max_input_chars)
        msg = dataclasses.replace(msg, voice=None, ref_audio=audio, ref_text=ref_text or None)
        return await stream_response(msg, rf, sf, "/v1/audio/speech/clone")

    @handled("/v1/models")
    async def models(request: Request) -> Response:
        now = time.monotonic()
        if models_cache["data"] is None or now - models_cache["at"] > 30:
            models_cache["data"] = await daemon_call("tts.models")
            models_cache["at"] = now
        data = [{"id": m, "object": "model", "owned_by": "qwen3ttsd", "alias": True} for m in oa.OPENAI_MODELS]
        data += [{"id": m["name"], "object": "model", "owned_by": "qwen3ttsd", "type": m["type"],
                  "loaded": m["loaded"]} for m in models_cache["data"]]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        import os

        info: dict[str, Any] = {"status": "ok", "version": __version__,
                                "daemon_socket": os.path.exists(cfg.tts_socket),
                                "warnings": checkpoints.configured_warnings()}  # no model / random weights
        if activator is not None:
            info["daemon"] = activator.info()
        return JSONResponse(info)

    async def prom(request: Request) -> Response:
        extra = {}
        if activator is not None:
            a = activator.info()
            extra = {"qwen3tts_daemon_spawns_total": a["spawns"], "qwen3tts_daemon_running": int(a["pid"] is not None)}
        return PlainTextResponse(metrics.render(extra), media_type="text/plain; version=0.0.4")

    from .ws import speech_stream_ws

    async def ws_endpoint(websocket):  # authorised by the Guard middleware
        metrics.ws_sessions += 1
        await speech_stream_ws(websocket, cfg, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if activator is not None:
            await activator.start()
        try:
            yield
        finally:
            if activator is not None:
                await activator.close()

    routes = [
        Route("/v1/audio/speech", speech, methods=["POST"]),
        Route("/v1/audio/speech/clone", speech_clone, methods=["POST"]),
        Route("/v1/audio/voices", voices, methods=["GET", "POST"]),
        Route("/v1/audio/voices/{name}", voice_item, methods=["GET", "DELETE"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/metrics", prom, methods=["GET"]),
        WebSocketRoute("/v1/audio/speech/stream", ws_endpoint),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(Guard, cfg=cfg)])
    app.state.metrics = metrics
    return app
