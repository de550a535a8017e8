"""OpenAI's Responses API (`POST /v1/responses`, `GET /v1/responses/{id}`), over the same plan
and runner as chat: a request is the chat completion of its `instructions` and `input`
messages (after the stored conversation of `previous_response_id`); the answer is a `response`
object, or its stream of events, with the `ponder` object."""

from __future__ import annotations

import collections
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from .. import runner
from ..calibration import Calibration
from ..runner import Finished, Idle, Outcome, Progress, Text
from ..types import Engine
from .errors import ApiError, error_body, to_api_error, validation_error
from .plan import Plan
from .render import ponder_object
from .schemas import (
    ChatCompletionRequest,
    ResponseMessage,
    ResponseObject,
    ResponseOutputText,
    ResponsesRequest,
    ResponseUsage,
)
from .service import KEEPALIVE_S

_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "auto", "none"),
    "truncation": (None, "disabled"),
    "reasoning": (None, {}),
    "include": (None, []),
    "background": (None, False),
    "top_logprobs": (None, 0),
    "max_tool_calls": (None,),
    "prompt": (None,),
    "conversation": (None,),
}
"""Responses API fields not implemented yet, with the values that ask for nothing (accepted);
any other value is a 400 naming the field."""

_NO_EFFECT = frozenset(
    {
        "parallel_tool_calls",
        "user",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "stream_options",
    }
)
"""Fields that change nothing generated here (no tools, no accounts, no caching tiers)."""

_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


class ResponseStore:
    """Responses kept for `previous_response_id` and `GET /v1/responses/{id}`: the last
    `size` of them in memory (0: none), each readable only by the caller that made it.
    Nothing is written to disk; a restart forgets them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: collections.OrderedDict[str, tuple[str, list[dict[str, str]], dict]] = (
            collections.OrderedDict()
        )

    def put(self, rid: str, owner: str, history: list[dict[str, str]], body: dict) -> None:
        if self.size <= 0:
            return
        self._items[rid] = (owner, history, body)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, rid: str, owner: str) -> tuple[list[dict[str, str]], dict] | None:
        item = self._items.get(rid)
        if item is None or item[0] != owner:
            return None
        return item[1], item[2]


def refuse_unsupported(req: ResponsesRequest) -> dict[str, Any]:
    """400 for a Responses field this server would otherwise ignore (its non-neutral value);
    the other unknown fields, passed on to the chat request (checked and reported there)."""
    extra = dict(req.model_extra or {})
    for name, neutral in _NEUTRAL.items():
        if name in extra and not any(extra[name] == v for v in neutral):
            raise ApiError(
                400,
                f"`{name}` is not supported by this server's Responses API yet; remove it",
                param=name,
                code="unsupported_parameter",
            )
    return {k: v for k, v in extra.items() if k not in _NEUTRAL and k not in _NO_EFFECT}


def response_format(req: ResponsesRequest) -> dict[str, Any] | None:
    """`text.format` (the Responses API's flat form) as chat's `response_format`."""
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    given = fmt.model_extra or {}
    if fmt.type == "json_schema":
        spec = {k: given[k] for k in ("name", "schema", "strict", "description") if k in given}
        return {"type": "json_schema", "json_schema": spec}
    return {"type": fmt.type}


def chat_param(param: str | None) -> str | None:
    """A chat request's field path as the Responses request names it."""
    if param and param.startswith("response_format"):
        return "text.format" + param.removeprefix("response_format").replace(".json_schema", "")
    return param


def input_messages(req: ResponsesRequest) -> list[dict[str, str]]:
    """The `input` as chat messages (text only)."""
    if isinstance(req.input, str):
        return [{"role": "user", "content": req.input}]
    if not req.input:
        raise ApiError(400, "input must not be empty", param="input", code="invalid_value")
    out = []
    for k, item in enumerate(req.input):
        where = f"input.{k}"
        if item.type != "message" or item.role is None:
            raise ApiError(
                400,
                f"input item type '{item.type}' is not supported (messages with a role only)",
                param=f"{where}.type",
                code="unsupported_parameter",
            )
        out.append({"role": item.role, "content": _text(item.content, f"{where}.content")})
    return out


def _text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.type not in _TEXT_PARTS or part.text is None:
            raise ApiError(
                400,
                f"content part type '{part.type}' is not supported (text only)",
                param=where,
                code="unsupported_content",
            )
        parts.append(part.text)
    return "".join(parts)


def to_chat(
    req: ResponsesRequest, history: list[dict[str, str]]
) -> tuple[ChatCompletionRequest, list[dict[str, str]]]:
    """The chat request this Responses request runs as, and the conversation it continues
    with (the stored history, then the input), without the instructions (they apply to
    this response only, as in OpenAI's API)."""
    extra = refuse_unsupported(req)
    conversation = history + input_messages(req)
    system = [{"role": "system", "content": req.instructions}] if req.instructions else []
    body: dict[str, Any] = {
        **extra,
        "model": req.model,
        "messages": system + conversation,
        "max_completion_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "stream": req.stream,
    }
    if req.ponder is not None:
        body["ponder"] = req.ponder
    if (fmt := response_format(req)) is not None:
        body["response_format"] = fmt
    try:
        return ChatCompletionRequest.model_validate(body), conversation
    except ValidationError as exc:
        err = validation_error(exc.errors())
        err.param = chat_param(err.param)
        raise err from None


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def response_object(
    rid: str,
    req: ResponsesRequest,
    plan: Plan,
    out: Outcome | None,
    created: int,
) -> dict[str, Any]:
    """The `response` object: in progress (no outcome yet) or finished."""
    status = "in_progress"
    incomplete = None
    text = ""
    if out is not None:
        sample = out.generation.samples[out.choices[0]]
        text = sample.text
        status = "incomplete" if sample.finish_reason == "length" else "completed"
        if status == "incomplete":
            incomplete = {"reason": "max_output_tokens"}
    message = ResponseMessage(
        id=f"msg_{rid.removeprefix('resp_')}",
        type="message",
        status=status,
        role="assistant",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )
    params = plan.job.params
    fields: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "incomplete_details": incomplete,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": req.model,
        "output": [message] if out is not None else [],
        "parallel_tool_calls": False,
        "previous_response_id": req.previous_response_id,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "text": {"format": req.text.format.model_dump() if req.text else {"type": "text"}},
        "tool_choice": "none",
        "tools": [],
        "truncation": "disabled",
        "store": req.store is not False,
        "metadata": req.metadata or {},
    }
    if out is not None:
        gen = out.generation
        fields["usage"] = ResponseUsage(
            input_tokens=gen.prompt_tokens,
            input_tokens_details={"cached_tokens": 0},
            output_tokens=gen.completion_tokens,
            output_tokens_details={"reasoning_tokens": 0},
            total_tokens=gen.prompt_tokens + gen.completion_tokens,
        )
        meta = ponder_object(plan, out)
        if meta is not None:
            fields["ponder"] = meta
    return ResponseObject(**fields).model_dump(exclude_unset=True)


def _event(kind: str, seq: int, **data: Any) -> str:
    body = {"type": kind, "sequence_number": seq, **data}
    return f"event: {kind}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


async def stream_response(
    rid: str,
    req: ResponsesRequest,
    plan: Plan,
    engine: Engine,
    calibration: Calibration | None,
    on_done: Any,
) -> AsyncIterator[str]:
    """The Responses API's events: created, in progress (again with `ponder.progress` as
    samples finish), the output item and its text part, text deltas, the done events, and
    `response.completed` (or `response.incomplete`) with the whole response; an error is one
    `error` event and `response.failed`."""
    created = int(time.time())
    mid = f"msg_{rid.removeprefix('resp_')}"
    seq = 0
    text = ""
    events = runner.events(plan.job, engine, KEEPALIVE_S, calibration)

    def nxt(kind: str, **data: Any) -> str:
        nonlocal seq
        seq += 1
        return _event(kind, seq - 1, **data)

    def part(t: str) -> dict[str, Any]:
        return {"type": "output_text", "text": t, "annotations": []}

    def item(status: str, t: str | None) -> dict[str, Any]:
        content = [] if t is None else [part(t)]
        return {"id": mid, "type": "message", "status": status, "role": "assistant",
                "content": content}  # fmt: skip

    where = {"item_id": mid, "output_index": 0, "content_index": 0}
    try:
        first = response_object(rid, req, plan, None, created)
        yield nxt("response.created", response=first)
        yield nxt("response.in_progress", response=first)
        yield nxt("response.output_item.added", output_index=0, item=item("in_progress", None))
        yield nxt("response.content_part.added", part=part(""), **where)
        async for event in events:
            if isinstance(event, Progress):
                progress: dict[str, Any] = {"done": event.done, "total": event.total}
                if event.stopped is not None:
                    progress["stopped"] = event.stopped
                yield nxt(
                    "response.in_progress", response={**first, "ponder": {"progress": progress}}
                )
            elif isinstance(event, Text):
                text += event.text
                yield nxt("response.output_text.delta", delta=event.text, **where)
            elif isinstance(event, Idle):
                yield ": keep-alive\n\n"
            elif isinstance(event, Finished):
                out = event.outcome
                whole = response_object(rid, req, plan, out, created)
                final = whole["output"][0]["content"][0]["text"]
                if final.startswith(text) and len(final) > len(text):
                    yield nxt("response.output_text.delta", delta=final[len(text) :], **where)
                yield nxt("response.output_text.done", text=final, **where)
                yield nxt("response.content_part.done", part=part(final), **where)
                done_item = item(whole["output"][0]["status"], final)
                yield nxt("response.output_item.done", output_index=0, item=done_item)
                kind = (
                    "response.completed"
                    if whole["status"] == "completed"
                    else "response.incomplete"
                )
                on_done(out, whole)
                yield nxt(kind, response=whole)
    except Exception as exc:
        err = to_api_error(exc)
        body = error_body(err.status, err.public, err.param, err.code)["error"]
        yield nxt("error", code=body.get("code"), message=body["message"], param=body.get("param"))
        failed = {**response_object(rid, req, plan, None, created), "status": "failed",
                  "error": {"code": body.get("code"), "message": body["message"]}}  # fmt: skip
        yield nxt("response.failed", response=failed)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
