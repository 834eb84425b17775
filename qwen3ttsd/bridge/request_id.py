"""``x-request-id`` on every HTTP response and WebSocket handshake.

Voice-agent frameworks (LiveKit, Pipecat) and the OpenAI SDK read the header to tie their
logs to ours. A client's own id is kept when it is sane (printable ASCII without spaces,
at most ``MAX_LEN`` characters: it goes into our logs and headers as it is); otherwise,
or when none is sent, the bridge makes one (``req_`` + 32 hex digits, OpenAI's shape).
Endpoints read it from ``request.state.request_id`` (SSE and WebSocket put it in their
first event). Outermost middleware: the guard's refusals carry it too, and an unexpected
exception becomes the usual JSON error with the id instead of a bare 500.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import TTSError
from .guard import refuse

log = logging.getLogger("qwen3tts.bridge.requests")

HEADER = "x-request-id"
MAX_LEN = 128
_SANE = re.compile(r"[!-~]{1,%d}" % MAX_LEN)   # printable ASCII, no spaces or controls


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's id if sane, else a new one."""
    for k, v in headers:
        if k.lower() == HEADER.encode():
            given = v.decode("latin-1")
            if _SANE.fullmatch(given):
                return given
            break
    return "req_" + uuid.uuid4().hex


def of(conn: HTTPConnection) -> str:
    """The request id of a request or WebSocket (set by ``RequestId``)."""
    rid: str = conn.scope.get("state", {}).get("request_id", "")
    return rid


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        rid = request_id(scope.get("headers", []))
        scope.setdefault("state", {})["request_id"] = rid
        header = (HEADER.encode(), rid.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept"):
                started = True
                message = {**message, "headers": [*message.get("headers", []), header]}
                if message["type"] == "http.response.start":
                    status = message["status"]
                    log.log(logging.WARNING if status >= 500 else logging.DEBUG, "%s %s %s -> %d", rid,
                            scope.get("method", "WS"), scope["path"], status)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if started or scope["type"] != "http":
                raise
            log.exception("%s %s %s failed", rid, scope.get("method"), scope["path"])
            await refuse(scope, receive, send_with_id, TTSError("internal", f"internal error (request {rid})"))
