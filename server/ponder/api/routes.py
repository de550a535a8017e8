"""HTTP routes: thin handlers that build a Plan, run it and render the result."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .. import metrics, runner, tracing
from ..config import Settings
from ..runner import Outcome
from ..strategies import REGISTRY
from ..types import Engine
from .aliases import describe, parse_model
from .checks import check_bounds, check_unicode
from .errors import ApiError
from .plan import Plan, build_plans, prompt_token_ids
from .render import response_body, result_headers
from .responses import (
    ResponseStore,
    assistant_turn,
    chat_param,
    new_response_id,
    response_object,
    stream_response,
    to_chat,
)
from .schemas import (
    CHAT_RESPONSES,
    COMPLETION_RESPONSES,
    RESPONSES_RESPONSES,
    RETRIEVE_RESPONSES,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    ResponsesRequest,
    Status,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
    error_responses,
)
from .security import Gate
from .service import EngineClock, stream, until_done_or_gone, with_deadline

router = APIRouter()
log = logging.getLogger("ponder.api")
_WARNED: set[str] = set()


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


def _plan_headers(plan: Plan) -> dict[str, str]:
    """Response headers that say what the server did with the request's fields."""
    if not plan.ignored:
        return {}
    return {"X-Ponder-Ignored-Fields": ", ".join(plan.ignored)[:1024]}


async def _respond(request: Request, plans: list[Plan], engine: Engine, who: str) -> Any:
    """Run the request's plans (one per prompt; several for a batch of prompts, run at once)
    and answer with their body, or stream the one plan."""
    plan = plans[0]
    if plan.stream:
        calibration = request.app.state.calibration
        return _streamed(request, plan, engine, who, stream(plan, engine, calibration))
    outs = await _run(request, plans, engine, who)
    with tracing.span("ponder.response"):
        headers = {**_plan_headers(plan), **result_headers(plans, outs)}
        return JSONResponse(response_body(plans, outs), headers=headers)


async def _run(request: Request, plans: list[Plan], engine: Engine, who: str) -> list[Outcome]:
    """The plans' outcomes: admitted under the caller's limits, within the request's
    deadline, cancelled if the client leaves or the server's grace period ends."""
    settings = get_settings(request)
    gate = get_gate(request)
    budget = sum(p.samples * p.job.params.max_tokens for p in plans)
    permit = gate.admit(who, budget)
    clock = EngineClock(settings.request_timeout_s or None, engine.reports_admission)
    calibration = request.app.state.calibration
    try:
        run = runner.run_all([p.job for p in plans], engine, calibration=calibration)
        outs = await until_done_or_gone(request, run, clock, gate.closing)
    finally:
        permit.release()
    gate.observe(budget, max(out.generation.generate_s for out in outs))
    return outs


def _streamed(
    request: Request, plan: Plan, engine: Engine, who: str, events: AsyncIterator[str]
) -> StreamingResponse:
    """A plan's SSE `events`, admitted under the caller's limits and within the deadline."""
    settings = get_settings(request)
    gate = get_gate(request)
    permit = gate.admit(who, plan.samples * plan.job.params.max_tokens)
    clock = EngineClock(settings.request_timeout_s or None, engine.reports_admission)
    guarded = with_deadline(events, clock, permit.release, gate.closing)
    weakref.finalize(guarded, permit.release)  # a stream that never started
    headers = {**_SSE_HEADERS, **_plan_headers(plan)}
    return StreamingResponse(guarded, media_type="text/event-stream", headers=headers)


async def _plan(request: Request, body: Any, settings: Settings, engine: Engine) -> list[Plan]:
    """Bounds checked here; rendering, tokenizing and compiling a caller's pattern (costs that
    grow with the input) run in a worker thread, never on the event loop."""
    check_bounds(body, settings)
    with tracing.span("ponder.plan"):
        plans = await asyncio.to_thread(build_plans, body, settings, engine)
    plan = plans[0]
    request.state.strategy = plan.strategy  # for the request metrics
    new = [name for name in plan.ignored if name not in _WARNED]
    if new and len(_WARNED) < 256:  # once per field name, bounded
        _WARNED.update(new)
        log.warning("request fields ignored (no server defines them): %r", new)
    return plans


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


@router.post("/v1/responses", responses=RESPONSES_RESPONSES)
async def responses(
    body: ResponsesRequest,
    request: Request,
    who: CallerDep,
    settings: SettingsDep,
    engine: ReadyEngineDep,
) -> Any:
    """OpenAI's Responses API (api/responses.py): the chat completion of its instructions and
    input, after the stored conversation of `previous_response_id`."""
    store: ResponseStore = request.app.state.responses
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        found = store.get(body.previous_response_id, who)
        if found is None:
            raise ApiError(
                400,
                "previous_response_id names no response this server keeps for you (it keeps "
                f"the last {store.size} stored responses in memory, PONDER_RESPONSES_STORED)",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        history = found[0]
    chat, conversation = to_chat(body, history)
    try:
        plans = await _plan(request, chat, settings, engine)
    except ApiError as err:  # name the Responses request's own fields
        err.param = chat_param(err.param)
        raise
    plan, rid = plans[0], new_response_id()

    def keep(out: Outcome, whole: dict[str, Any]) -> None:
        if body.store is not False:
            store.put(rid, who, [*conversation, assistant_turn(whole)], whole)

    if plan.stream:
        calibration = request.app.state.calibration
        events = stream_response(rid, body, plan, engine, calibration, keep)
        return _streamed(request, plan, engine, who, events)
    (out,) = await _run(request, plans, engine, who)
    whole = response_object(rid, body, plan, out, int(time.time()))
    keep(out, whole)
    return JSONResponse(whole, headers={**_plan_headers(plan), **result_headers(plans, [out])})


@router.get("/v1/responses/{response_id}", responses=RETRIEVE_RESPONSES)
async def retrieve_response(response_id: str, request: Request, who: CallerDep) -> Any:
    store: ResponseStore = request.app.state.responses
    found = store.get(response_id, who)
    if found is None:
        raise ApiError(
            404,
            "no stored response with that id (responses are kept in memory, for the caller "
            "that made them)",
            param="response_id",
            code="not_found",
        )
    return found[1]


def _model_card(request: Request, engine: Engine, model_id: str) -> dict[str, Any]:
    """One model or alias, with what it does (`ponder`: strategy, samples, temperature);
    404 for a name this server does not serve."""
    defined: dict[str, str] = request.app.state.aliases
    alias = parse_model(model_id, engine.model_name, defined)
    card: dict[str, Any] = {
        "id": model_id,
        "object": "model",
        "created": request.app.state.started,
        "owned_by": "ponder",
        "root": engine.model_name,
        "ponder": describe(alias),
    }
    if model_id in defined:
        card["ponder"]["spec"] = defined[model_id]
    return card


def _model_cards(engine: Engine, request: Request) -> list[dict[str, Any]]:
    """The served model, the operator's aliases (PONDER_ALIASES), one alias per strategy."""
    name = engine.model_name
    ids = [name, *request.app.state.aliases]
    ids += [f"{name}+{s.name}" for s in REGISTRY.values() if s.kind != "plain"]
    return [_model_card(request, engine, i) for i in ids]


@router.get("/v1/models", responses={200: {"model": ModelList}, **error_responses(401, 413)})
async def models(engine: EngineDep, request: Request, who: CallerDep) -> dict[str, Any]:
    return {"object": "list", "data": _model_cards(engine, request)}


@router.get(
    "/v1/models/{model_id:path}",
    responses={200: {"model": ModelCard}, **error_responses(401, 404, 413)},
)
async def model(model_id: str, engine: EngineDep, request: Request, who: CallerDep) -> Any:
    """One model or alias (the SDK's `models.retrieve`); any alias a request may name,
    `@N` and `:tT` included."""
    return _model_card(request, engine, model_id)


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


# ------------------------------------------------------------- tokenizer (vLLM's endpoints)

_TOKEN_ERRORS = error_responses(400, 401, 404, 413, 422, 503)


@contextlib.contextmanager
def _limited(request: Request, who: str) -> Iterator[None]:
    """The rate and concurrency limits of the /v1 routes, for the tokenizer routes."""
    permit = get_gate(request).admit(who)
    try:
        yield
    finally:
        permit.release()


def _check_model(name: str | None, engine: Engine) -> None:
    if name is not None:
        parse_model(name, engine.model_name)


@router.post("/tokenize", responses={200: {"model": TokenizeResponse}, **_TOKEN_ERRORS})
async def tokenize(
    body: TokenizeRequest,
    request: Request,
    settings: SettingsDep,
    engine: ReadyEngineDep,
    who: CallerDep,
) -> dict[str, Any]:
    """Token ids of a prompt exactly as /v1/completions (`prompt`) or /v1/chat/completions
    (`messages`) would see them; bounded and limited like them, tokenized in a worker
    thread."""
    with _limited(request, who):
        return await _tokenize(body, settings, engine)


async def _tokenize(body: TokenizeRequest, settings: Settings, engine: Engine) -> dict[str, Any]:
    _check_model(body.model, engine)
    info = engine.tokenizer_info()  # 400 when the engine has no tokenizer
    texts = [body.prompt] if body.prompt is not None else [m.content for m in body.messages or []]
    if len(texts) > settings.max_messages:
        raise ApiError(
            400, f"at most {settings.max_messages} messages", param="messages", code="invalid_value"
        )
    chars = sum(len(t) if isinstance(t, str) else 0 for t in texts)
    if chars > settings.max_prompt_chars:
        raise ApiError(
            400,
            f"the prompt has {chars} characters; at most {settings.max_prompt_chars} "
            "(PONDER_MAX_PROMPT_CHARS)",
            param="prompt" if body.prompt is not None else "messages",
            code="prompt_too_long",
        )
    if body.prompt is not None:
        check_unicode(body.prompt, "prompt")
        add = True if body.add_special_tokens is None else body.add_special_tokens
        ids = await asyncio.to_thread(engine.tokenize, body.prompt, add)
    else:
        chat = ChatCompletionRequest(model=engine.model_name, messages=body.messages or [])
        check_bounds(chat, settings)
        ids = await asyncio.to_thread(prompt_token_ids, chat, engine)
    strs = None
    if body.return_token_strs:
        strs = await asyncio.to_thread(lambda: [engine.detokenize([t], special=True) for t in ids])
    return {
        "count": len(ids),
        "max_model_len": info["model_max_length"],
        "tokens": ids,
        "token_strs": strs,
    }


@router.post("/detokenize", responses={200: {"model": DetokenizeResponse}, **_TOKEN_ERRORS})
async def detokenize(
    body: DetokenizeRequest,
    request: Request,
    settings: SettingsDep,
    engine: ReadyEngineDep,
    who: CallerDep,
) -> dict[str, str]:
    """Text of token ids, special tokens shown (so it tokenizes back to the same ids). The
    body is bounded before it is parsed (`detokenize_body_limit`)."""
    with _limited(request, who):
        return await _detokenize(body, settings, engine)


def detokenize_body_limit(settings: Settings) -> int:
    """Bytes a /detokenize body may have: PONDER_MAX_PROMPT_TOKENS ids of up to 15 bytes
    each (digits, comma, white space), and room for the rest of the object."""
    return 15 * settings.max_prompt_tokens + 4096


async def _detokenize(
    body: DetokenizeRequest, settings: Settings, engine: Engine
) -> dict[str, str]:
    _check_model(body.model, engine)
    engine.tokenizer_info()
    if len(body.tokens) > settings.max_prompt_tokens:
        raise ApiError(
            400,
            f"at most {settings.max_prompt_tokens} tokens (PONDER_MAX_PROMPT_TOKENS)",
            param="tokens",
            code="prompt_too_long",
        )

    def checked_text(ids: list[int]) -> str:
        if any(t < 0 or t >= engine.n_vocab for t in ids):
            raise ApiError(
                400,
                f"token ids must be in [0, {engine.n_vocab})",
                param="tokens",
                code="invalid_value",
            )
        return engine.detokenize(ids, special=True)

    return {"prompt": await asyncio.to_thread(checked_text, list(body.tokens))}


@router.get("/tokenizer_info", responses={200: {"model": TokenizerInfo}, **_TOKEN_ERRORS})
async def tokenizer_info(
    engine: ReadyEngineDep, request: Request, who: CallerDep
) -> dict[str, Any]:
    """The tokenizer's special tokens, chat template and lengths (lm-eval's remote tokenizer)."""
    with _limited(request, who):
        return engine.tokenizer_info()
