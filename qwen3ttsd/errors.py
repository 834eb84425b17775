"""Error codes shared by every layer (engine, daemon, bridge, client): one vocabulary.

Torch-free on purpose: the bridge and the client library map these codes to HTTP statuses
and exceptions without importing the engine.
"""

from __future__ import annotations

from typing import Any

# code -> (HTTP status the bridge answers with, retryable by default)
CODES: dict[str, tuple[int, bool]] = {
    "bad_request": (400, False),
    "unsupported": (400, False),
    "not_found": (404, False),
    "conflict": (409, False),
    "payload_too_large": (413, False),
    "frame_too_large": (413, False),
    "no_such_method": (404, False),
    "unauthorized": (401, False),
    "forbidden": (403, False),
    "model_missing": (409, False),
    "busy": (503, True),
    "timeout": (504, True),
    "unavailable": (503, True),
    "model_load_failed": (500, False),
    "storage_full": (507, False),
    "cancelled": (499, False),
    "client_stalled": (408, False),
    "protocol_error": (400, False),
    "internal": (500, True),
}


class TTSError(Exception):
    """An error with a stable code, a human message and optional structured data."""

    def __init__(self, code: str, message: str, *, retryable: bool | None = None,
                 data: dict[str, Any] | None = None) -> None:
        if code not in CODES:
            code = "internal"
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = CODES[code][1] if retryable is None else retryable
        self.data = data

    @property
    def http_status(self) -> int:
        return CODES[self.code][0]

    def to_wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {"code": self.code, "message": self.message, "retryable": self.retryable}
        if self.data:
            d["data"] = self.data
        return d

    @classmethod
    def from_wire(cls, obj: object) -> "TTSError":
        if not isinstance(obj, dict):
            return cls("internal", f"malformed error object: {obj!r}")
        return cls(str(obj.get("code", "internal")), str(obj.get("message", "")),
                   retryable=obj.get("retryable"), data=obj.get("data"))

    def __repr__(self) -> str:
        return f"TTSError({self.code!r}, {self.message!r})"


class Cancelled(TTSError):
    def __init__(self, message: str = "cancelled") -> None:
        super().__init__("cancelled", message)


def text_stream_unsupported(where: str) -> TTSError:
    """A streamed-text request (``text_stream``) on a backend that cannot take one (the
    sequential engine, an upstream front). Marked by ``param: text_stream``, so a front end
    falls back to its clause path on this and only this ``unsupported`` (not, say, on "no
    VoiceDesign model installed")."""
    return TTSError("unsupported", f"streamed text (text_stream) is not served by {where}",
                    data={"param": "text_stream"})


def is_text_stream_unsupported(e: TTSError) -> bool:
    return e.code == "unsupported" and (e.data or {}).get("param") == "text_stream"
