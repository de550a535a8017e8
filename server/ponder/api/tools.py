"""Tool calls (`tools`, `tool_choice`, `parallel_tool_calls`), in one of two forms:

- **The chat template's own**, when the template describes tools in a form Ponder knows
  (`SYNTAXES`: the Hermes form of Qwen 2.5/3, Hermes and SmolLM3 templates, `<tool_call>{"name",
  "arguments"}</tool_call>`; the Llama 3.1+ JSON form, `{"name", "parameters"}`). The template
  is given the tools and renders them, and the history's calls and results, as the model was
  trained to read them; a required call is constrained by a Lark grammar of that form.
- **The generic form** otherwise (SmolLM2's template has no tools): the tools are described in
  a system message with one answer format, a JSON object `{"tool_calls": [{"name": ...,
  "arguments": {...}}]}`; an assistant message's `tool_calls` are written back in that form,
  a `tool` message is a user message that says whose result it is. A required call is
  constrained by the calls' JSON schema.

With `tool_choice` "auto" the model may answer in words or with a call; the reply is read
back into OpenAI's `message.tool_calls` (answers/jsonanswers.read_tool_calls reads every form).
docs/api.md, "Tools"."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from ..answers.jsonanswers import read_tool_calls
from .errors import ApiError
from .schemas import ChatCompletionRequest

MAX_TOOLS = 64
MAX_CALLS = 8
"""Calls in one constrained reply (a small model asked for calls may otherwise repeat them to
its token budget)."""


@dataclass(frozen=True)
class ToolSyntax:
    """A chat template's own tool-call form: how a template that uses it is recognised (all
    `markers` in its text, and it reads `tools`), the key a call's arguments go under, and
    the Lark grammar (llguidance's dialect) that constrains a required call."""

    name: str
    markers: tuple[str, ...]
    arguments_key: str
    opening: str
    """Text before each call's JSON object ("" for a bare object)."""
    closing: str
    many: bool
    """Several calls in one reply (one after another)."""

    def grammar(self, functions: list[Any], single: bool) -> str:
        one = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "name": {"const": f.name},
                        self.arguments_key: f.parameters or {"type": "object"},
                    },
                    "required": ["name", self.arguments_key],
                    "additionalProperties": False,
                }
                for f in functions
            ]
        }
        call = " ".join(
            part for part in (_lark_text(self.opening), "obj", _lark_text(self.closing)) if part
        )
        start = "call" if single or not self.many else f'call ("\\n" call){{0,{MAX_CALLS - 1}}}'
        body = json.dumps(one, separators=(",", ":"))
        return f"start: {start}\ncall: {call}\nobj: %json {body}\n"


def _lark_text(text: str) -> str:
    return json.dumps(text) if text else ""


SYNTAXES = (
    ToolSyntax(
        "hermes", ("<tool_call>",), "arguments", "<tool_call>\n", "\n</tool_call>", many=True
    ),
    ToolSyntax(
        "llama3_json",
        ('"parameters": dictionary of argument name',),
        "parameters",
        "",
        "",
        many=False,
    ),
)
"""The template forms Ponder renders and reads (answers/jsonanswers.read_tool_calls reads
each); a template with tools in another form gets the generic form."""


def syntax_of(template: str | None) -> ToolSyntax | None:
    """The form of a chat template's tools, None when it has none Ponder knows."""
    if not template or "tools" not in template:
        return None
    for syntax in SYNTAXES:
        if all(m in template for m in syntax.markers):
            return syntax
    return None


@dataclass(frozen=True)
class ToolPlan:
    """What a request's tools ask for: in the generic form, the system text that describes
    them and the JSON schema a required reply follows; in a template's own form
    (`syntax`), the tools the template is given and the Lark grammar a required reply
    follows (None: free, "auto"); and the tools' names."""

    names: tuple[str, ...]
    prompt: str | None = None
    schema: str | None = None
    syntax: ToolSyntax | None = None
    tools: tuple[dict[str, Any], ...] = ()
    grammar: str | None = None


def tool_plan(req: ChatCompletionRequest, template: str | None) -> ToolPlan | None:
    """None without tools (or with tool_choice "none"). `template`: the engine's chat
    template, whose own tool form is used when Ponder knows it."""
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
    single = isinstance(choice, dict) or req.parallel_tool_calls is False
    syntax = syntax_of(template)
    if syntax is not None:
        given = tuple(
            {"type": "function", "function": f.model_dump(exclude_none=True)} for f in chosen
        )
        grammar = syntax.grammar(chosen, single) if choice != "auto" else None
        return ToolPlan(tuple(by_name), syntax=syntax, tools=given, grammar=grammar)
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
        schema = json.dumps(_calls_schema(chosen, single), separators=(",", ":"))
    return ToolPlan(tuple(by_name), prompt="\n".join(lines), schema=schema)


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
    calls: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "maxItems": 1 if single else MAX_CALLS,
        "items": {"anyOf": items},
    }
    return {
        "type": "object",
        "properties": {"tool_calls": calls},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }


def history(
    role: str,
    content: str,
    extra: dict[str, Any],
    where: str,
    native: bool = False,
    called: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A message of the history as the template reads it. Generic form: an assistant's tool
    calls in the tool prompt's JSON form, a tool's result as a user message that says whose
    it is. A template's own form (`native`): OpenAI's messages, each call's arguments as an
    object (what templates render), a tool's result with its function's `name`. `called`
    maps earlier calls' ids to their functions' names (a result names its function); a
    malformed `tool_calls` is a 400 naming it (`where`: the message's path)."""
    called = {} if called is None else called
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
                    "id": str(c.get("id") or f"call_{k}"),
                    "name": str(c["function"]["name"]),
                    "arguments": json.loads(c["function"].get("arguments") or "{}"),
                }
                for k, c in enumerate(calls)
            ]
        except (KeyError, TypeError, AttributeError, ValueError, RecursionError):
            raise ApiError(
                400,
                "tool_calls are [{id, type: function, function: {name, arguments (JSON text)}}]",
                param=f"{where}.tool_calls",
                code="invalid_value",
            ) from None
        called.update({c["id"]: c["name"] for c in said})
        if native:
            return {
                "role": "assistant",
                "content": content,
                "tool_calls": [
                    {"id": c["id"], "type": "function",
                     "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in said
                ],
            }  # fmt: skip
        plain = [{"name": c["name"], "arguments": c["arguments"]} for c in said]
        return {"role": "assistant", "content": json.dumps({"tool_calls": plain})}
    if role == "tool":
        call_id = str(extra.get("tool_call_id") or "")
        name = extra.get("name") or called.get(call_id)
        if native:
            out = {"role": "tool", "content": content, "tool_call_id": call_id}
            return {**out, "name": str(name)} if name else out
        who = name or call_id or "a tool"
        return {"role": "user", "content": f"Result of the tool call {who}: {content}"}
    return {"role": role, "content": content}


def read_calls(text: str, plan: ToolPlan) -> list[dict[str, Any]] | None:
    """OpenAI's `tool_calls` from a reply that calls the request's tools (in any form
    read_tool_calls knows), None when the reply is not such a call (an answer in words,
    with tool_choice "auto")."""
    calls = read_tool_calls(text)
    if calls is None or any(c["name"] not in plan.names for c in calls):
        return None
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
        }
        for c in calls
    ]
