"""TTSError -> the OpenAI-style JSON error every HTTP endpoint (and the guard) answers with.

One place decides status, body and headers, so a refusal from the middleware and one from
an endpoint look the same to clients (the OpenAI SDK maps 401 to AuthenticationError,
reads ``Retry-After`` on 503s).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from ..errors import TTSError


def error_body(e: TTSError) -> tuple[int, dict[str, Any], dict[str, str]]:
    status = e.http_status if e.http_status != 499 else 400
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": e.message, "type": kind, "code": e.code,
                      "param": (e.data or {}).get("param")}}
    headers: dict[str, str] = {}
    if e.retryable and status >= 500:
        headers["Retry-After"] = "2"
    if e.code == "unauthorized":
        headers["WWW-Authenticate"] = 'Bearer realm="qwen3tts"'
    return status, body, headers


def error_response(e: TTSError) -> JSONResponse:
    status, body, headers = error_body(e)
    return JSONResponse(body, status_code=status, headers=headers or None)
