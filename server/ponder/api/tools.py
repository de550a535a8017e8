"""Tool calls (`tools`, `tool_choice`, `parallel_tool_calls`) for a model whose chat template
has no tools (SmolLM2's has none): the tools are described in a system message with one
answer format, a JSON object `{"tool_calls": [{"name": ..., "arguments": {...}}]}`, and the
reply is read back into OpenAI's `message.tool_calls`. With `tool_choice` "required" or a named
function the reply is constrained to that object by the tools' JSON schema (structured
outputs); with "auto" the model may answer in words or with the object. History: an assistant
message's `tool_calls` are written back in the same form, a `tool` message is a user message
that says whose result it is. docs/api.md, "Tools"."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from ..answers.jsonanswers import parse_json
from .errors import ApiError
from .schemas import ChatCompletionRequest

MAX_TOOLS = 64


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools ask for: the system text that describes them, the schema the
    reply must follow (None: free, "auto"), and the tools' names."""

    prompt: str
    schema: str | None
    names: tuple[str, ...]


def tool_plan(req: ChatCompletionRequest) -> ToolPlan | None:
    """None without tools (or with tool_choice "none")."""
    tools = req.tools or []
    if not tools or req.tool_choice == "none":
        return None
    if len(tools) > MAX_TOOLS:
        raise ApiError(400, f"at most {MAX_TOOLS} tools", param="tools", code="invalid_value")
    by_name = {t.function.name: t.function for t in tools}
    choice = req.tool_choice or "auto"
    if isinstance(choice, dict):
        name = str((choice.get("function") or {}).get("name", ""))
        if name not in by_name:
            raise ApiError(
                400,
                "tool_choice names no tool in `tools`",
                param="tool_choice",
                code="invalid_value",
            )
        chosen = [by_name[name]]
    elif choice in ("auto", "required"):
        chosen = list(by_name.values())
    else:
        raise ApiError(
            400,
            "tool_choice is 'none', 'auto', 'required' or a function",
            param="tool_choice",
            code="invalid_value",
        )
    lines = [
        "You can call tools. To call them, answer with only this JSON object:",
        '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}',
    ]
    if choice == "auto":
        lines.append("If no tool is needed, answer normally in words.")
    lines.append("Tools:")
    for f in chosen:
        params = json.dumps(f.parameters or {"type": "object"}, separators=(",", ":"))
        lines.append(f"- {f.name}: {f.description or ''} Arguments (JSON schema): {params}")
    schema = None
    if choice != "auto":
        single = isinstance(choice, dict) or req.parallel_tool_calls is False
        schema = json.dumps(_calls_schema(chosen, single), separators=(",", ":"))
    return ToolPlan("\n".join(lines), schema, tuple(by_name))


def _calls_schema(functions: list[Any], single: bool) -> dict[str, Any]:
    items = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f.name},
                "arguments": f.parameters or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in functions
    ]
    calls: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": items}}
    if single:
        calls["maxItems"] = 1
    return {
        "type": "object",
        "properties": {"tool_calls": calls},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }


def history(role: str, content: str, extra: dict[str, Any], where: str) -> dict[str, str]:
    """A message of the history as the template reads it: an assistant's tool calls in the
    tool prompt's JSON form, a tool's result as a user message that says whose it is. A
    malformed `tool_calls` is a 400 naming it (`where`: the message's path)."""
    calls = extra.get("tool_calls")
    if calls and role != "assistant":
        raise ApiError(
            400, "only assistant messages carry tool_calls", param=f"{where}.tool_calls",
            code="invalid_value",
        )  # fmt: skip
    if calls:
        try:
            said = [
                {
                    "name": str(c["function"]["name"]),
                    "arguments": json.loads(c["function"].get("arguments") or "{}"),
                }
                for c in calls
            ]
        except (KeyError, TypeError, AttributeError, ValueError, RecursionError):
            raise ApiError(
                400,
                "tool_calls are [{id, type: function, function: {name, arguments (JSON text)}}]",
                param=f"{where}.tool_calls",
                code="invalid_value",
            ) from None
        return {"role": "assistant", "content": json.dumps({"tool_calls": said})}
    if role == "tool":
        who = extra.get("name") or extra.get("tool_call_id") or "a tool"
        return {"role": "user", "content": f"Result of the tool call {who}: {content}"}
    return {"role": role, "content": content}


def read_calls(text: str, plan: ToolPlan) -> list[dict[str, Any]] | None:
    """OpenAI's `tool_calls` from a reply in the tool prompt's form, None when the reply is
    not a call of the request's tools (an answer in words, with tool_choice "auto")."""
    value = parse_json(text)
    if not isinstance(value, dict) or not isinstance(value.get("tool_calls"), list):
        return None
    out = []
    for call in value["tool_calls"]:
        if not isinstance(call, dict) or call.get("name") not in plan.names:
            return None
        arguments = call.get("arguments", {})
        out.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(arguments)},
            }
        )
    return out or None
