"""The wire protocol: length-prefixed msgpack frames carrying msgpack-rpc messages.

Pure msgpack and stdlib - shared by the daemon, the bridge, ``qwen3tts-ctl`` and the client
library. See docs/protocol.md for the full specification.

Frame:        u32 big-endian body length | msgpack body
Request:      [0, msgid, method, [params-map]]
Response:     [1, msgid, error-or-nil, result-or-nil]      (exactly one per request)
Notification: [2, method, params-array]

Limits are checked on the length prefix *before* a body is read, and the body is decoded
with bounded container sizes, so a hostile peer cannot make us allocate more than a frame.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import msgpack

from .errors import TTSError

PROTOCOL_VERSION = 1
REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2

MAX_REQUEST_FRAME = 16 * 1024 * 1024    # what the daemon accepts (voice uploads ride here)
MAX_RESPONSE_FRAME = 4 * 1024 * 1024    # what clients accept
_HEADER = struct.Struct(">I")

# Notification names; their params are the dataclasses in messages.py.
N_PROGRESS = "tts.progress"   # daemon -> client while a synthesize request streams
N_START = "tts.start"
N_CHUNK = "tts.chunk"
N_SEGMENT = "tts.segment"     # a segment's span in the delivered audio (captions)
N_CANCEL = "$/cancel"         # client -> daemon
N_TEXT = "$/text"             # client -> daemon: more text for a text_stream request
N_ERROR = "$/error"           # daemon -> client: a message with no usable msgid, or a broken frame


class _Nil:
    """What ``read_frame`` returns for a frame whose body is msgpack ``nil``: a message
    (an invalid one, answered with ``$/error``), not the end of the stream (``None``)."""

    def __repr__(self) -> str:
        return "NIL"


NIL = _Nil()


class ProtocolError(TTSError):
    def __init__(self, message: str, code: str = "protocol_error") -> None:
        super().__init__(code, message)


def pack(obj: Any) -> bytes:
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return _HEADER.pack(len(body)) + body


def request(msgid: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    return pack([REQUEST, msgid, method, [params or {}]])


def response(msgid: int, error: dict[str, Any] | None, result: Any = None) -> bytes:
    return pack([RESPONSE, msgid, error, result])


def notification(method: str, params: list[Any]) -> bytes:
    return pack([NOTIFICATION, method, params])


def unpack_body(body: bytes, max_len: int) -> Any:
    """Decode one body with every container bounded by the frame size."""
    try:
        return msgpack.unpackb(
            body, raw=False, strict_map_key=True, use_list=True,
            max_bin_len=max_len, max_str_len=max_len, max_array_len=max(16, max_len // 8),
            max_map_len=max(16, max_len // 16), max_ext_len=0,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise ProtocolError(f"undecodable msgpack body: {e}") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is the peer's malformed input
        raise ProtocolError(f"undecodable msgpack body: {type(e).__name__}") from None


async def read_frame(reader: asyncio.StreamReader, max_len: int) -> Any | None:
    """Next decoded message (``NIL`` for a nil body), or None on a clean EOF between frames."""
    try:
        header = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise ProtocolError("truncated frame header") from None
    (n,) = _HEADER.unpack(header)
    if n > max_len:
        raise ProtocolError(f"frame of {n} bytes exceeds the {max_len}-byte limit", code="frame_too_large")
    try:
        body = await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise ProtocolError("truncated frame body") from None
    return _message(unpack_body(body, max_len))


def _message(obj: Any) -> Any:
    return NIL if obj is None else obj


def read_frame_sync(sock: socket.socket, max_len: int) -> Any | None:
    """Blocking twin of read_frame for the sync client."""
    header = _recv_exact(sock, 4)
    if header is None:
        return None
    (n,) = _HEADER.unpack(header)
    if n > max_len:
        raise ProtocolError(f"frame of {n} bytes exceeds the {max_len}-byte limit", code="frame_too_large")
    body = _recv_exact(sock, n)
    if body is None:
        raise ProtocolError("truncated frame body")
    return _message(unpack_body(body, max_len))


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if not buf:
                return None
            raise ProtocolError("connection closed mid-frame")
        buf += chunk
    return bytes(buf)


def parse_request(msg: Any) -> tuple[int, str, dict[str, Any]]:
    """Validate a decoded message as a request; returns (msgid, method, params)."""
    if not isinstance(msg, list) or len(msg) != 4 or msg[0] != REQUEST:
        raise ProtocolError("expected a request [0, msgid, method, [params]]")
    _, msgid, method, params = msg
    if not isinstance(msgid, int) or isinstance(msgid, bool) or not 0 <= msgid < 2 ** 32:
        raise ProtocolError("msgid must be an unsigned 32-bit integer")
    if not isinstance(method, str):
        raise ProtocolError("method must be a string")
    if isinstance(params, list):
        if len(params) == 0:
            params = {}
        elif len(params) == 1 and isinstance(params[0], dict):
            params = params[0]
        else:
            raise TTSError("bad_request", "params must be [ {map} ]")
    if not isinstance(params, dict):
        raise TTSError("bad_request", "params must be a map")
    return msgid, method, params
