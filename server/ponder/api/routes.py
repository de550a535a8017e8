"""HTTP routes: thin handlers that build a Plan, run it and render the result."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .. import metrics
from ..config import Settings
from ..engines.base import Engine
from ..strategies import DECODERS, STRATEGIES
from .errors import ApiError
from .plan import Plan, build_plan
from .render import response_body
from .schemas import ChatCompletionRequest, CompletionRequest
from .service import execute, stream_buffered, stream_segments, stream_tokens

router = APIRouter()


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def ready_engine(request: Request) -> Engine:
    """The engine, or 503 + Retry-After while it loads (or after it failed)."""
    engine = get_engine(request)
    if not engine.ready:
        failed = request.app.state.engine_error
        msg = f"engine failed to start: {failed}" if failed else "the model is still loading"
        raise ApiError(503, msg, code="engine_not_ready", headers={"Retry-After": "5"})
    return engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ReadyEngineDep = Annotated[Engine, Depends(ready_engine)]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _respond(plan: Plan, engine: Engine) -> Any:
    if plan.stream:
        if plan.samples == 1 and plan.strategy == "none":
            events = stream_tokens(plan, engine)
        elif plan.samples == 1 and plan.strategy in DECODERS:
            events = stream_segments(plan, engine)
        else:
            events = stream_buffered(plan, engine)
        return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)
    return JSONResponse(response_body(await execute(plan, engine)))


def _plan(request: Request, body: Any, settings: Settings, engine: Engine) -> Plan:
    plan = build_plan(body, settings, engine)
    request.state.strategy = plan.strategy  # for the request metrics
    return plan


@router.post("/v1/chat/completions")
async def chat_completions(
    body: ChatCompletionRequest, request: Request, settings: SettingsDep, engine: ReadyEngineDep
) -> Any:
    return await _respond(_plan(request, body, settings, engine), engine)


@router.post("/v1/completions")
async def completions(
    body: CompletionRequest, request: Request, settings: SettingsDep, engine: ReadyEngineDep
) -> Any:
    return await _respond(_plan(request, body, settings, engine), engine)


@router.get("/v1/models")
async def models(engine: EngineDep, request: Request) -> dict[str, Any]:
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
async def prometheus_metrics() -> Response:
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(engine: ReadyEngineDep) -> dict[str, str]:
    return {"status": "ready", "model": engine.model_name}
