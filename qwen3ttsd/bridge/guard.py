"""What every request passes before any endpoint runs: Host, Origin, API key, body size.

The bridge listens on a LAN in Docker/Synology setups, so browsers are part of the threat
model. A page on another site can POST ``text/plain`` JSON or multipart without a CORS
preflight, and open WebSockets with its own ``Origin``; DNS rebinding makes the attacker's
name resolve to us, so the request even looks same-origin - only ``Host`` gives it away.

* ``Host`` must be an IP literal, ``localhost``, this machine's name, or listed in
  ``allowed_hosts`` (``*`` disables the check; reverse proxies list their public name).
* A request that changes state (any method but GET/HEAD/OPTIONS) or opens a WebSocket
  and carries an ``Origin`` must come from the same origin or one in ``allowed_origins``.
  Clients that are not browsers send no ``Origin`` and are not affected.
* ``/v1`` needs the API key when one is set: ``Authorization: Bearer KEY`` (scheme in any
  case), or ``?api_key=`` for WebSockets (browsers cannot set their headers) - else 401.
* A browser's cross-site (or same-site, other-origin) read of ``/v1`` - ``<img src>``,
  a link, a ``no-cors`` fetch - is refused from ``Sec-Fetch-Site`` unless its ``Origin`` is
  allowed: such a read would start the daemon (and may leak through side channels). The
  page itself may still be opened from a link. Clients without ``Sec-Fetch-*`` (curl,
  SDKs) are not affected.
* No response may be framed (clickjacking the page's buttons): ``X-Frame-Options: DENY``
  and ``Content-Security-Policy: frame-ancestors 'none'`` on every response, refusals too.
* Every refusal is counted in ``/metrics`` by code and status.
* Bodies are refused from ``Content-Length`` before a byte is read, and a chunked body is
  cut off at the limit, so no request can grow the bridge past its memory budget.

Pure ASGI (no body buffering of its own) so streaming responses pass through untouched.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import socket
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import BridgeConfig
from ..errors import TTSError
from ..messages import MAX_ENCODE_BYTES
from .http_errors import error_body
from .metrics import Metrics

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SMALL_BODY = 64 * 1024            # anything that is not a speech request or an upload
# a text character as a client may send it: a JSON escape of a surrogate pair ("\ud83d\ude00"),
# the worst case in UTF-8 or escaped JSON; the HTTP body and WebSocket frame limits both use it
MAX_BYTES_PER_INPUT_CHAR = 12

DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
CROSS_SITE = frozenset({"cross-site", "same-site"})   # Sec-Fetch-Site values of another origin
NO_FRAMING = [(b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'")]


def text_bytes(max_chars: int) -> int:
    """The most bytes ``max_chars`` characters of text take in a JSON message."""
    return max_chars * MAX_BYTES_PER_INPUT_CHAR


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a body passes its limit (no Content-Length given)."""


def _csv(value: str) -> frozenset[str]:
    return frozenset(v.strip().lower().rstrip("/") for v in value.split(",") if v.strip())


@functools.lru_cache(maxsize=1)
def machine_names() -> frozenset[str]:
    names = {"localhost"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names |= {name.lower(), name.lower().split(".")[0] + ".local", name.lower().split(".")[0]}
    return frozenset(names)


def split_host(host: str) -> tuple[str, str]:
    """'[::1]:8880' -> ('::1', '8880'); 'nas.local' -> ('nas.local', '')."""
    host = host.strip().lower()
    if host.startswith("["):
        inner, _, rest = host[1:].partition("]")
        return inner, rest.removeprefix(":")
    name, sep, port = host.rpartition(":")
    return (name, port) if sep and port.isdigit() else (host, "")


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    if "*" in allowed:
        return True
    name, _ = split_host(host)
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True  # an IP literal cannot be a rebound DNS name
    except ValueError:
        pass
    return name in machine_names() or name.endswith(".localhost") or name in allowed


def origin_allowed(origin: str, host: str, allowed: frozenset[str]) -> bool:
    """Same origin as the request's Host, or explicitly allowed. ``null`` never is."""
    origin = origin.strip().lower().rstrip("/")
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return False
    o_name, o_port = split_host(parts.netloc)
    h_name, h_port = split_host(host)
    default = DEFAULT_PORTS[parts.scheme]
    return o_name == h_name and (o_port or default) == (h_port or default)


def bearer_ok(authorization: str, key: str) -> bool:
    scheme, _, token = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


class Guard:
    """ASGI middleware applying the checks above; refusals are the usual JSON errors."""

    def __init__(self, app: ASGIApp, cfg: BridgeConfig, metrics: Metrics | None = None) -> None:
        self.app = app
        self.cfg = cfg
        self.metrics = metrics
        self.hosts = _csv(cfg.allowed_hosts)
        self.origins = _csv(cfg.allowed_origins)
        self.limits = {
            "/v1/audio/speech": text_bytes(cfg.max_input_chars) + SMALL_BODY,
            "/v1/audio/speech/clone": cfg.max_upload_bytes + SMALL_BODY,
            "/v1/audio/voices": cfg.max_upload_bytes + SMALL_BODY,
            "/v1/audio/encode": MAX_ENCODE_BYTES,
        }

    def body_limit(self, path: str) -> int:
        return self.limits.get(path.rstrip("/"), SMALL_BODY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            self.check(scope, headers)
        except TTSError as e:
            return await self.refuse(scope, receive, send, e)
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        await self.limited(scope, receive, send, headers)

    def check(self, scope: Scope, headers: dict[str, str]) -> None:
        host = headers.get("host", "")
        if not host_allowed(host, self.hosts):
            raise TTSError("forbidden", f"Host {host!r} is not allowed; add it to "
                           "QWEN3TTS_BRIDGE_ALLOWED_HOSTS if this server is reached by that name")
        origin = headers.get("origin")
        changes_state = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        if origin is not None and changes_state and not origin_allowed(origin, host, self.origins):
            raise TTSError("forbidden", f"cross-origin request from {origin!r} refused; allow the "
                           "origin with QWEN3TTS_BRIDGE_ALLOWED_ORIGINS")
        if (headers.get("sec-fetch-site", "").lower() in CROSS_SITE and scope["path"].startswith("/v1")
                and not (origin is not None and origin_allowed(origin, host, self.origins))):
            raise TTSError("forbidden", "a cross-site browser request for the API is refused; allow the "
                           "calling page's origin with QWEN3TTS_BRIDGE_ALLOWED_ORIGINS")
        if self.cfg.api_key and scope["path"].startswith("/v1") and not self.authorized(scope, headers):
            raise TTSError("unauthorized", "missing or wrong API key (Authorization: Bearer KEY)")

    def authorized(self, scope: Scope, headers: dict[str, str]) -> bool:
        if bearer_ok(headers.get("authorization", ""), self.cfg.api_key):
            return True
        if scope["type"] == "websocket":
            keys = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key", [])
            return any(hmac.compare_digest(k.encode(), self.cfg.api_key.encode()) for k in keys)
        return False

    async def limited(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        limit = self.body_limit(scope["path"])
        too_large = TTSError("payload_too_large", f"request body larger than {limit} bytes")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self.refuse(scope, receive, send, too_large)
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self.refuse(scope, receive, send, too_large)

    async def refuse(self, scope: Scope, receive: Receive, send: Send, e: TTSError) -> None:
        if self.metrics is not None:
            self.metrics.refused(e.code, 403 if scope["type"] == "websocket" else e.http_status)
        await refuse(scope, receive, send, e)


class NoFraming:
    """The no-framing headers on every response: the outermost middleware, so that even a
    500 made by an outer error handler has them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)

        async def send_unframeable(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                message = {**message, "headers": [*message.get("headers", []), *NO_FRAMING]}
            await send(message)

        await self.app(scope, receive, send_unframeable)


async def refuse(scope: Scope, receive: Receive, send: Send, e: TTSError) -> None:
    if scope["type"] == "websocket":
        # Before the handshake, closing makes the server answer the upgrade with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": e.message[:120]})
        return
    status, body, headers = error_body(e)
    raw = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
            (b"connection", b"close")]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})
