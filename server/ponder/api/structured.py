"""Structured outputs (`response_format`): the JSON schema a chat request asks its samples to
follow, checked and bounded before anything is generated. Engines constrain decoding with it
(llama.cpp: engines/grammar.py, llguidance; vLLM: its own structured outputs)."""

from __future__ import annotations

import json
from typing import Any

from ..answers import pattern_workers
from ..strategies import Strategy
from .errors import ApiError
from .schemas import ChatCompletionRequest, CompletionRequest

MAX_SCHEMA_CHARS = 65536
MAX_SCHEMA_DEPTH = 32
"""Bounds on a response_format schema, checked before it is compiled (in a worker process)."""


def json_schema(req: ChatCompletionRequest | CompletionRequest, strategy: Strategy) -> str | None:
    """The structured output a chat request asks for (`response_format`), as schema text;
    bounded, then compiled by llguidance in a pattern worker process (a 400 naming
    `response_format` when it cannot be), before anything is generated."""
    fmt = req.response_format if isinstance(req, ChatCompletionRequest) else None
    if fmt is None or fmt.type == "text":
        return None
    where = "response_format.json_schema.schema" if fmt.json_schema else "response_format"
    if strategy.kind == "decode":
        raise ApiError(
            400,
            f"response_format '{fmt.type}' does not combine with strategy '{strategy.name}' "
            "(its trials continue partial answers); use a selection strategy or none",
            param="response_format",
            code="unsupported_parameter",
        )
    schema: dict[str, Any] = fmt.json_schema.schema_ if fmt.json_schema else {}
    text = json.dumps(schema or {"type": "object"}, separators=(",", ":"))
    if len(text) > MAX_SCHEMA_CHARS or _depth(schema) > MAX_SCHEMA_DEPTH:
        raise ApiError(
            400,
            f"the schema is over {MAX_SCHEMA_CHARS} characters or {MAX_SCHEMA_DEPTH} levels deep",
            param=where,
            code="invalid_value",
        )
    if fmt.type == "json_object":
        text = '{"type":"object"}'
    error = pattern_workers().schema_error(text)
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
