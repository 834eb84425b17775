"""Reading request bodies: strict JSON and bounded multipart uploads. Sizes are already
bounded by the Guard middleware before a byte is read; these turn what remains into
clear 4xx errors."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request

from ..errors import TTSError
from ..messages import bad
from .guard import BodyTooLarge
from .openai_compat import parse_json


async def read_json(request: Request) -> Any:
    return parse_json(await request.body())


async def read_form(request: Request, max_part_size: int) -> FormData:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise bad("expected multipart/form-data")
    try:
        return await request.form(max_files=2, max_fields=32, max_part_size=max_part_size)
    except (TTSError, BodyTooLarge):
        raise
    except Exception as e:  # noqa: BLE001 - starlette raises its own types for limits
        msg = str(getattr(e, "detail", e))
        code = "payload_too_large" if "size" in msg.lower() or "large" in msg.lower() else "bad_request"
        raise TTSError(code, f"bad upload: {msg}") from None


async def upload_bytes(form: FormData, max_bytes: int, field: str = "file") -> bytes:
    f = form.get(field) or form.get("audio") or form.get("audio_sample")
    if f is None or isinstance(f, str):
        raise bad(f"an audio file is required in '{field}'", field)
    data = await f.read()
    if len(data) > max_bytes:
        raise TTSError("payload_too_large", f"upload larger than {max_bytes} bytes")
    if not data:
        raise bad("the uploaded file is empty", field)
    return data
