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
from .render import ponder_object, tool_calls
from .schemas import (
    ChatCompletionRequest,
    ResponseFunctionCall,
    ResponseMessage,
    ResponseObject,
    ResponseOutputText,
    ResponsesRequest,
    ResponseTool,
    ResponseUsage,
)
from .service import KEEPALIVE_S

_NEUTRAL: dict[str, tuple[Any, ...]] = {
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
        "user",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "stream_options",
    }
)
"""Fields that change nothing generated here (no accounts, no caching tiers)."""

_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


class ResponseStore:
    """Responses kept for `previous_response_id` and `GET /v1/responses/{id}`: the last
    `size` of them in memory (0: none), each readable only by the caller that made it.
    Nothing is written to disk; a restart forgets them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: collections.OrderedDict[str, tuple[str, list[dict[str, Any]], dict]] = (
            collections.OrderedDict()
        )

    def put(self, rid: str, owner: str, history: list[dict[str, Any]], body: dict) -> None:
        if self.size <= 0:
            return
        self._items[rid] = (owner, history, body)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, rid: str, owner: str) -> tuple[list[dict[str, Any]], dict] | None:
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
    if param and param.startswith(("tools.", "tool_choice.")):
        return param.replace(".function", "", 1)
    return param


def chat_tools(req: ResponsesRequest) -> dict[str, Any]:
    """`tools` and `tool_choice` (the Responses API's flat forms) as chat's: function tools
    only, a built-in tool (web search, file search, ...) is a 400 naming it."""
    out: dict[str, Any] = {}
    if req.tools:
        tools = []
        for k, given in enumerate(req.tools):
            kind = given.get("type") if isinstance(given, dict) else None
            if kind != "function":
                raise ApiError(
                    400,
                    f"tool type '{kind}' is not supported (function tools only)",
                    param=f"tools.{k}.type",
                    code="unsupported_parameter",
                )
            try:
                tool = ResponseTool.model_validate(given)
            except ValidationError as exc:
                err = validation_error(exc.errors())
                err.param = f"tools.{k}" + (f".{err.param}" if err.param else "")
                raise err from None
            function = tool.model_dump(exclude={"type"}, exclude_none=True)
            tools.append({"type": "function", "function": function})
        out["tools"] = tools
    choice = req.tool_choice
    if isinstance(choice, dict):  # {"type": "function", "name": ...}
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise ApiError(
                400,
                "tool_choice is 'none', 'auto', 'required' or {type: function, name}",
                param="tool_choice",
                code="invalid_value",
            )
        choice = {"type": "function", "function": {"name": choice["name"]}}
    if choice is not None:
        out["tool_choice"] = choice
    if req.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = req.parallel_tool_calls
    return out


def input_messages(req: ResponsesRequest) -> list[dict[str, Any]]:
    """The `input` as chat messages: text messages; earlier `function_call` items as an
    assistant message's `tool_calls` (consecutive calls in one message), and each
    `function_call_output` as a `tool` message."""
    if isinstance(req.input, str):
        return [{"role": "user", "content": req.input}]
    if not req.input:
        raise ApiError(400, "input must not be empty", param="input", code="invalid_value")
    out: list[dict[str, Any]] = []
    for k, item in enumerate(req.input):
        where = f"input.{k}"
        if item.type == "function_call":
            if not item.call_id or not item.name or item.arguments is None:
                raise ApiError(
                    400,
                    "a function_call item has call_id, name and arguments",
                    param=where,
                    code="invalid_value",
                )
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}  # fmt: skip
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.type == "function_call_output":
            if not item.call_id or item.output is None:
                raise ApiError(
                    400,
                    "a function_call_output item has call_id and output",
                    param=where,
                    code="invalid_value",
                )
            output = _text(item.output, f"{where}.output")
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
        elif item.type != "message" or item.role is None:
            raise ApiError(
                400,
                f"input item type '{item.type}' is not supported (messages with a role, "
                "function_call and function_call_output)",
                param=f"{where}.type",
                code="unsupported_parameter",
            )
        else:
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
    req: ResponsesRequest, history: list[dict[str, Any]]
) -> tuple[ChatCompletionRequest, list[dict[str, Any]]]:
    """The chat request this Responses request runs as, and the conversation it continues
    with (the stored history, then the input), without the instructions (they apply to
    this response only, as in OpenAI's API)."""
    extra = refuse_unsupported(req)
    conversation = history + input_messages(req)
    called = {
        c["id"]: c["function"]["name"] for m in conversation for c in m.get("tool_calls") or []
    }
    for m in conversation:  # a tool's result names its function, as chat messages may
        if m["role"] == "tool" and m["tool_call_id"] in called:
            m.setdefault("name", called[m["tool_call_id"]])
    system = [{"role": "system", "content": req.instructions}] if req.instructions else []
    body: dict[str, Any] = {
        **extra,
        **chat_tools(req),
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
    """The `response` object: in progress (no outcome yet) or finished. A reply that calls
    the request's tools is one `function_call` output item per call, else one message."""
    status = "in_progress"
    incomplete = None
    output: list[ResponseMessage | ResponseFunctionCall] = []
    if out is not None:
        sample = out.generation.samples[out.choices[0]]
        status = "incomplete" if sample.finish_reason == "length" else "completed"
        if status == "incomplete":
            incomplete = {"reason": "max_output_tokens"}
        calls = tool_calls(plan, sample) or []
        output = [
            ResponseFunctionCall(
                id=f"fc_{c['id'].removeprefix('call_')}",
                type="function_call",
                status="completed",
                call_id=c["id"],
                name=c["function"]["name"],
                arguments=c["function"]["arguments"],
            )
            for c in calls
        ] or [
            ResponseMessage(
                id=f"msg_{rid.removeprefix('resp_')}",
                type="message",
                status=status,
                role="assistant",
                content=[ResponseOutputText(type="output_text", text=sample.text, annotations=[])],
            )
        ]
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
        "output": output,
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": req.previous_response_id,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "text": {"format": req.text.format.model_dump() if req.text else {"type": "text"}},
        "tool_choice": req.tool_choice or "auto",
        "tools": req.tools or [],
        "truncation": "disabled",
        "store": req.store is not False,
        "metadata": req.metadata or {},
    }
    if out is not None:
        gen = out.generation
        fields["usage"] = ResponseUsage(
            input_tokens=gen.prompt_tokens + gen.followup_prompt_tokens,
            input_tokens_details={"cached_tokens": 0},
            output_tokens=gen.completion_tokens,
            output_tokens_details={"reasoning_tokens": 0},
            total_tokens=gen.prompt_tokens + gen.followup_prompt_tokens + gen.completion_tokens,
        )
        meta = ponder_object(plan, out)
        if meta is not None:
            fields["ponder"] = meta
    return ResponseObject(**fields).model_dump(exclude_unset=True)


def assistant_turn(whole: dict[str, Any]) -> dict[str, Any]:
    """The finished response's output as the chat message a continued conversation
    (`previous_response_id`) reads: its text, or its function calls as `tool_calls`."""
    items = whole["output"]
    if items and items[0]["type"] == "function_call":
        calls = [
            {
                "id": i["call_id"],
                "type": "function",
                "function": {"name": i["name"], "arguments": i["arguments"]},
            }
            for i in items
        ]
        return {"role": "assistant", "content": None, "tool_calls": calls}
    return {"role": "assistant", "content": items[0]["content"][0]["text"]}


def _event(kind: str, seq: int, **data: Any) -> str:
    body = {"type": kind, "sequence_number": seq, **data}
    return f"event: {kind}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


def _function_call_events(k: int, call: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The events of one function_call output item (`k`: its index): added (arguments
    empty), the arguments as one delta, their done event, the item done."""
    where = {"item_id": call["id"], "output_index": k}
    started = {**call, "status": "in_progress", "arguments": ""}
    return [
        ("response.output_item.added", {"output_index": k, "item": started}),
        ("response.function_call_arguments.delta", {"delta": call["arguments"], **where}),
        ("response.function_call_arguments.done", {"arguments": call["arguments"], **where}),
        ("response.output_item.done", {"output_index": k, "item": call}),
    ]


async def stream_response(
    rid: str,
    req: ResponsesRequest,
    plan: Plan,
    engine: Engine,
    calibration: Calibration | None,
    on_done: Any,
) -> AsyncIterator[str]:
    """The Responses API's events: created, in progress (again with `ponder.progress` as
    samples finish), the output item and its text part, text deltas, the done events (or,
    for a reply that calls tools, each function_call item and its arguments), and
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
    deferred = plan.tools is not None  # the reply may be function calls: known at the end
    try:
        first = response_object(rid, req, plan, None, created)
        yield nxt("response.created", response=first)
        yield nxt("response.in_progress", response=first)
        if not deferred:
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
            elif isinstance(event, Text) and not deferred:
                text += event.text
                yield nxt("response.output_text.delta", delta=event.text, **where)
            elif isinstance(event, Idle):
                yield ": keep-alive\n\n"
            elif isinstance(event, Finished):
                out = event.outcome
                whole = response_object(rid, req, plan, out, created)
                first_item = whole["output"][0]
                if first_item["type"] == "function_call":
                    for k, call in enumerate(whole["output"]):
                        for name, data in _function_call_events(k, call):
                            yield nxt(name, **data)
                else:
                    if deferred:
                        yield nxt(
                            "response.output_item.added",
                            output_index=0,
                            item=item("in_progress", None),
                        )
                        yield nxt("response.content_part.added", part=part(""), **where)
                    final = first_item["content"][0]["text"]
                    if final.startswith(text) and len(final) > len(text):
                        yield nxt("response.output_text.delta", delta=final[len(text) :], **where)
                    yield nxt("response.output_text.done", text=final, **where)
                    yield nxt("response.content_part.done", part=part(final), **where)
                    done_item = item(first_item["status"], final)
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
