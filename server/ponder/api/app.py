"""`create_app()`: settings, engine, routes and error handlers assembled in one place."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__, metrics, tracing, verifiers
from ..answers import default_worker, pattern_workers
from ..calibration import Calibration
from ..config import Settings
from ..engines import create_engine
from ..strategies import STRATEGIES
from ..types import Engine
from . import playground
from .aliases import defined_aliases
from .errors import ApiError, error_response, install_error_handlers
from .responses import ResponseStore
from .routes import detokenize_body_limit, router
from .security import Gate

log = logging.getLogger("ponder")


async def _start_engine(app: FastAPI, engine: Engine) -> None:
    try:
        await engine.start()
        log.info("engine ready: serving '%s'", engine.model_name)
    except Exception as exc:
        app.state.engine_error = str(exc) or type(exc).__name__
        log.exception("engine failed to start")


_TRACED_ROUTES = frozenset(
    {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models"}
)
"""Routes named as they are in span names (any other /v1 path is `/v1/*`: a span name
never carries what a client put in a path)."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""HTTP methods a span names as they are (any other: `_OTHER`, as the semantic conventions
say, so a client's made-up method never becomes a span name)."""


class _RequestMetrics:
    """ASGI middleware: count /v1 requests by strategy and final status, time them to the last
    byte (streams included), each in its trace's server span (ponder/tracing.py). Routes put
    the strategy in `request.state.strategy`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers") or []
            if k in (b"traceparent", b"tracestate")
        }
        route = scope["path"] if scope["path"] in _TRACED_ROUTES else "/v1/*"
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"  # semconv
        with tracing.server_span(
            f"{method} {route}", headers, **{"http.request.method": method, "http.route": route}
        ) as span:
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                strategy = str(scope.get("state", {}).get("strategy", "unplanned"))
                metrics.observe_request(strategy, status, time.perf_counter() - started)
                tracing.set_attributes(
                    span, strategy=strategy, **{"http.response.status_code": status}
                )


class _BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes with a 413 envelope, from the
    Content-Length header or while reading a chunked body (buffered, so at most `limit`)."""

    def __init__(self, app: ASGIApp, limit: int, paths: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.paths = paths or {}
        """Smaller limits for some paths (a body that is nothing but a list to bound)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = min(self.limit, self.paths.get(scope.get("path", ""), self.limit))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                await self._too_large(scope, receive, send, limit)
                return
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(
            ApiError(413, f"request body over {limit} bytes", code="body_too_large")
        )
        await response(scope, receive, send)


def _own_tracing() -> dict[str, Any]:
    """FastAPI 0.16x makes request spans of its own once a tracer provider is set; Ponder's
    server span (`_RequestMetrics`) is the request's, on every FastAPI version, so FastAPI's
    are turned off where it has them."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        return {"telemetry": {"tracing": False}}
    return {}


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The ASGI app. The engine loads in the background: /health answers at once, /ready
    and the /v1 routes answer 503 until the model has produced its first token."""
    settings = settings or Settings()
    if settings.default_strategy not in STRATEGIES:
        raise ValueError(
            f"unknown default strategy {settings.default_strategy!r} "
            f"(PONDER_DEFAULT_STRATEGY); available: {', '.join(STRATEGIES)}"
        )
    calibration = Calibration.load(settings.calibration) if settings.calibration else None
    engine = engine or create_engine(settings)
    tracing.setup(settings.trace_content)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = default_worker()
        worker.timeout_s = settings.symbolic_timeout_s
        starting = asyncio.ensure_future(_start_engine(app, engine))
        await asyncio.to_thread(worker.start)
        try:
            yield
        finally:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            await engine.close()
            tracing.shutdown()
            worker.close()
            pattern_workers().close()

    app = FastAPI(
        title="Ponder",
        version=__version__,
        description="OpenAI-compatible inference-time scaling server.",
        lifespan=lifespan,
        **_own_tracing(),
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.engine_error = None
    app.state.calibration = calibration
    app.state.responses = ResponseStore(settings.responses_stored)
    app.state.aliases = defined_aliases(settings)  # checked now: a bad one stops the start
    verifiers.configure(verifiers.parse_verifiers(settings.verifiers))  # likewise
    app.state.gate = Gate(settings, wait_counts=not engine.reports_admission)
    app.state.started = int(time.time())
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(playground.router)
    app.add_middleware(
        _BodyLimit,
        limit=settings.max_body_bytes,
        paths={"/detokenize": detokenize_body_limit(settings)},
    )
    app.add_middleware(_RequestMetrics)
    metrics.watch_engine(lambda: engine.in_flight, lambda: engine.queue_depth)
    if hasattr(engine, "counters"):  # engines that batch across requests (llama.cpp)
        metrics.watch_batching(lambda: dataclasses.asdict(engine.counters))
    return app
