"""Structured outputs (`response_format`): the JSON schema a chat request asks its samples to
follow, checked and bounded before anything is generated. Engines constrain decoding with it
(llama.cpp: engines/grammar.py, llguidance; vLLM: its own structured outputs)."""

from __future__ import annotations

import json
from typing import Any

from ..answers import pattern_workers
from ..strategies import Strategy
from .errors import ApiError
from .schemas import ChatCompletionRequest, CompletionRequest, ResponseFormat
from .tools import ToolPlan

MAX_SCHEMA_CHARS = 65536
MAX_SCHEMA_DEPTH = 32
"""Bounds on a response_format schema, checked before it is compiled (in a worker process)."""


def constraint(
    req: ChatCompletionRequest | CompletionRequest,
    strategy: Strategy,
    tools: ToolPlan | None = None,
) -> tuple[str | None, str | None]:
    """The structured output a chat request asks for, as (JSON schema text, Lark grammar),
    at most one of them: `response_format`'s schema, or a required tool call's (the calls'
    schema in the generic form, the template's own form's grammar). Bounded, then compiled
    by llguidance in a pattern worker process (a 400 naming the field when it cannot be),
    before anything is generated."""
    fmt = req.response_format if isinstance(req, ChatCompletionRequest) else None
    required = tools is not None and (tools.schema or tools.grammar) is not None
    if required and fmt is not None and fmt.type != "text":
        raise ApiError(
            400,
            "a required tool call and a response_format cannot both shape the reply",
            param="response_format",
            code="unsupported_parameter",
        )
    if tools is not None and tools.grammar is not None:
        return None, _checked(tools.grammar, "tools", strategy, lark=True)
    if tools is not None and tools.schema is not None:
        return _checked(tools.schema, "tools", strategy), None
    return _json_schema(fmt, strategy), None


def _json_schema(fmt: ResponseFormat | None, strategy: Strategy) -> str | None:
    """`response_format`'s schema text, checked (None: plain text)."""
    if fmt is None or fmt.type == "text":
        return None
    where = "response_format.json_schema.schema" if fmt.json_schema else "response_format"
    schema: dict[str, Any] = fmt.json_schema.schema_ if fmt.json_schema else {}
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        raise ApiError(
            400, f"the schema is over {MAX_SCHEMA_DEPTH} levels deep", param=where,
            code="invalid_value",
        )  # fmt: skip
    if fmt.type == "json_object":
        return _checked('{"type":"object"}', where, strategy)
    return _checked(
        json.dumps(schema or {"type": "object"}, separators=(",", ":")), where, strategy
    )


def _checked(text: str, where: str, strategy: Strategy, lark: bool = False) -> str:
    """A schema's (or `lark`, a grammar's) text, refused (400 naming `where`) when the
    strategy cannot constrain its samples, when it is over MAX_SCHEMA_CHARS, or when
    llguidance cannot compile it (in a pattern worker process, within that process's memory
    and time limits)."""
    if strategy.kind == "decode":
        raise ApiError(
            400,
            f"a structured reply does not combine with strategy '{strategy.name}' (its trials "
            "continue partial answers); use a selection strategy or none",
            param=where.split(".")[0],
            code="unsupported_parameter",
        )
    if len(text) > MAX_SCHEMA_CHARS:
        raise ApiError(
            400, f"the schema is over {MAX_SCHEMA_CHARS} characters", param=where,
            code="invalid_value",
        )  # fmt: skip
    error = pattern_workers().schema_error(text, lark)
    if error is not None:
        raise ApiError(
            400, f"the schema cannot be used: {error}", param=where, code="invalid_value"
        )
    return text


def _depth(value: Any) -> int:
    """Nesting depth of JSON data, without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            todo += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            todo += [(v, depth + 1) for v in item]
    return deepest
