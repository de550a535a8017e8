"""HTTP routes: thin handlers that build a Plan, run it and render the result."""

from __future__ import annotations

import asyncio
import weakref
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .. import metrics
from ..config import Settings
from ..engines.base import Engine
from ..strategies import DECODERS, STRATEGIES
from .errors import ApiError
from .plan import Plan, build_plan, check_bounds
from .render import response_body
from .schemas import (
    CHAT_RESPONSES,
    COMPLETION_RESPONSES,
    ChatCompletionRequest,
    CompletionRequest,
    ModelList,
    Status,
    error_responses,
)
from .security import Gate
from .service import (
    execute,
    stream_buffered,
    stream_segments,
    stream_tokens,
    until_done_or_gone,
    with_deadline,
)

router = APIRouter()


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_gate(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


def caller(request: Request) -> str:
    """Who is calling (401 when API keys are on and the request has no valid one)."""
    return get_gate(request).identify(request)


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def ready_engine(request: Request) -> Engine:
    """The engine, or 503 + Retry-After while it loads (or after it failed)."""
    engine = get_engine(request)
    if get_gate(request).draining:
        raise ApiError(
            503, "the server is shutting down", code="shutting_down", headers={"Retry-After": "5"}
        )
    if not engine.ready:
        failed = request.app.state.engine_error
        msg = f"engine failed to start: {failed}" if failed else "the model is still loading"
        raise ApiError(503, msg, code="engine_not_ready", headers={"Retry-After": "5"})
    return engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ReadyEngineDep = Annotated[Engine, Depends(ready_engine)]
CallerDep = Annotated[str, Depends(caller)]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _respond(request: Request, plan: Plan, engine: Engine, who: str) -> Any:
    settings = get_settings(request)
    gate = get_gate(request)
    budget = plan.samples * plan.params.max_tokens
    permit = gate.admit(who, budget)
    timeout = settings.request_timeout_s or None
    if plan.stream:
        if plan.samples == 1 and plan.strategy == "none":
            events = stream_tokens(plan, engine)
        elif plan.samples == 1 and plan.strategy in DECODERS:
            events = stream_segments(plan, engine)
        else:
            events = stream_buffered(plan, engine)
        guarded = with_deadline(events, timeout, permit.release, gate.closing)
        weakref.finalize(guarded, permit.release)  # a stream that never started
        return StreamingResponse(guarded, media_type="text/event-stream", headers=_SSE_HEADERS)
    try:
        out = await until_done_or_gone(request, execute(plan, engine), timeout, gate.closing)
    finally:
        permit.release()
    gate.observe(budget, out.generation.generate_s)
    return JSONResponse(response_body(out))


async def _plan(request: Request, body: Any, settings: Settings, engine: Engine) -> Plan:
    """Bounds checked here; rendering, tokenizing and compiling a caller's pattern (costs that
    grow with the input) run in a worker thread, never on the event loop."""
    check_bounds(body, settings)
    plan = await asyncio.to_thread(build_plan, body, settings, engine)
    request.state.strategy = plan.strategy  # for the request metrics
    return plan


@router.post("/v1/chat/completions", responses=CHAT_RESPONSES)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    who: CallerDep,
    settings: SettingsDep,
    engine: ReadyEngineDep,
) -> Any:
    return await _respond(request, await _plan(request, body, settings, engine), engine, who)


@router.post("/v1/completions", responses=COMPLETION_RESPONSES)
async def completions(
    body: CompletionRequest,
    request: Request,
    who: CallerDep,
    settings: SettingsDep,
    engine: ReadyEngineDep,
) -> Any:
    return await _respond(request, await _plan(request, body, settings, engine), engine, who)


@router.get("/v1/models", responses={200: {"model": ModelList}, **error_responses(401, 413)})
async def models(engine: EngineDep, request: Request, who: CallerDep) -> dict[str, Any]:
    created = request.app.state.started
    name = engine.model_name
    ids = [name] + [f"{name}+{s}" for s in STRATEGIES if s != "none"]
    return {
        "object": "list",
        "data": [
            {"id": i, "object": "model", "created": created, "owned_by": "ponder", "root": name}
            for i in ids
        ],
    }


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, settings: SettingsDep) -> Response:
    if settings.metrics_require_key:
        caller(request)
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)


@router.get("/health", responses={200: {"model": Status}, **error_responses(413)})
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses={200: {"model": Status}, **error_responses(413, 503)})
async def ready(engine: ReadyEngineDep) -> dict[str, str]:
    return {"status": "ready", "model": engine.model_name}
