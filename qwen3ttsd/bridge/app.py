"""The bridge's HTTP API (Starlette): OpenAI-compatible speech, voices, models, health.

``create_app`` only wires things together; the endpoints live in ``bridge/routes/`` (one
module per resource, each exporting ``routes``). Middleware, outermost first: ``NoFraming``
(no response may be framed), ``RequestId`` (``x-request-id`` on every response), ``Guard``
(Host/Origin/cross-site/API key/body size), ``MetricsMiddleware`` (every response counted). A
``TTSError`` raised by any endpoint becomes the OpenAI-style JSON error through Starlette's
exception handlers (``http_errors.py``). ``/health`` and ``/metrics`` never wake the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ..config import BridgeConfig
from ..errors import TTSError
from .context import BridgeContext
from .guard import Guard, NoFraming
from .http_errors import error_response
from .listeners import AcceptErrorLog
from .metrics import MetricsMiddleware
from .page import page_routes
from .request_id import RequestId
from .routes import calls, encode, health, models, speech, voices, warmup
from .wyoming import wyoming_service

if TYPE_CHECKING:
    from ..activator import Activator

LifespanHook = Callable[[BridgeContext], contextlib.AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def run_activator(ctx: BridgeContext) -> AsyncIterator[None]:
    """Socket activation without systemd: hold the daemon's sockets while serving."""
    if ctx.activator is None:
        yield
        return
    await ctx.activator.start()
    try:
        yield
    finally:
        await ctx.activator.close()


@contextlib.asynccontextmanager
async def quiet_accept_errors(ctx: BridgeContext) -> AsyncIterator[None]:
    """Out of fds, asyncio would log every failed accept: one line per interval instead."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(AcceptErrorLog())
    try:
        yield
    finally:
        loop.set_exception_handler(previous)


async def tts_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TTSError)
    return error_response(exc)


def create_app(cfg: BridgeConfig, activator: Activator | None = None, connection_cap: int | None = None) -> Starlette:
    """``connection_cap``: connections per listener (Wyoming here; uvicorn's is set by
    ``main``); default ``cfg.max_connections``."""
    ctx = BridgeContext(cfg, activator)
    cap = cfg.max_connections if connection_cap is None else connection_cap

    def run_wyoming(ctx: BridgeContext) -> contextlib.AbstractAsyncContextManager[None]:
        """Home Assistant's Wyoming server, when ``--wyoming`` is set (else nothing)."""
        return wyoming_service(ctx.cfg, ctx.facts, ctx.metrics, cap)

    # a new endpoint module: one more `*module.routes` here
    routes: list[BaseRoute] = [*speech.routes, *voices.routes, *models.routes, *health.routes, *calls.routes,
                               *warmup.routes, *encode.routes,
                               *page_routes(cfg, ctx.facts)]
    # a service that lives as long as the app (e.g. another listener): one more hook here;
    # hooks start in order and stop in reverse, each gets the BridgeContext
    hooks: list[LifespanHook] = [quiet_accept_errors, run_activator, run_wyoming]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for hook in hooks:
                await stack.enter_async_context(hook(ctx))
            yield

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={TTSError: tts_error},
                    middleware=[Middleware(NoFraming), Middleware(RequestId),
                                Middleware(Guard, cfg=cfg, metrics=ctx.metrics),
                                Middleware(MetricsMiddleware, metrics=ctx.metrics)])
    app.state.bridge = ctx
    return app
