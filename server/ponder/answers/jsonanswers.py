"""JSON answers (answer format `json`): a completion's JSON value in a canonical form (keys
sorted, integral floats as integers, no white space), so two samples that wrote the same
object with their keys in another order or `1.0` for `1` are the same answer; and its leaves
by JSON-pointer path, for votes per field (strategies/fields.py)."""

from __future__ import annotations

import json
from typing import Any

MAX_LEAVES = 1024
"""Leaves read from one answer (a vote per field counts each)."""

_DECODER = json.JSONDecoder()


def parse_json(text: str) -> Any | None:
    """The JSON value of a completion: the whole text, else the first `{` or `[` that starts
    one (a model may wrap it in words or a code fence). None when there is none."""
    body = text.strip()
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        pass
    for opener in "{[":
        start = body.find(opener)
        if start != -1:
            try:
                value, _ = _DECODER.raw_decode(body, start)
                return value
            except (ValueError, RecursionError):
                continue
    return None


def _canonical_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {str(k): _canonical_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_value(v) for v in value]
    return value


def canonical(value: Any) -> str:
    """One text per JSON value: keys sorted, integral floats as integers, compact."""
    return json.dumps(
        _canonical_value(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


_TAG_OPEN, _TAG_CLOSE = "<tool_call>", "</tool_call>"


def read_tool_calls(text: str) -> list[dict[str, Any]] | None:
    """The calls a reply makes, as `[{"name", "arguments"}]`, in any of the forms Ponder asks
    models for (api/tools.py): the generic `{"tool_calls": [{"name", "arguments"}]}`, the
    Hermes form of chat templates such as Qwen's (`<tool_call>{"name", "arguments"}
    </tool_call>`, once per call) and the Llama 3 JSON form (`{"name", "parameters"}`).
    None when the reply is none of them (an answer in words)."""
    if _TAG_OPEN in text:
        calls: list[Any] = []
        pos = text.find(_TAG_OPEN)
        while pos != -1:
            end = text.find(_TAG_CLOSE, pos)
            body = text[pos + len(_TAG_OPEN) : end if end != -1 else len(text)]
            calls.append(parse_json(body))
            pos = -1 if end == -1 else text.find(_TAG_OPEN, end)
    else:
        value = parse_json(text)
        if isinstance(value, dict) and "tool_calls" in value:
            calls = value["tool_calls"] if isinstance(value["tool_calls"], list) else []
        elif isinstance(value, dict) and "name" in value and "parameters" in value:
            calls = [{"name": value["name"], "arguments": value["parameters"]}]
        else:
            return None
    out = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return None
        args = call.get("arguments", call.get("parameters", {}))
        out.append({"name": call["name"], "arguments": args})
    return out or None


def tool_calls(text: str, ignore: tuple[str, ...] = ()) -> str | None:
    """The calls of a tool-call reply (`read_tool_calls`) as one canonical text: each call's
    name and its arguments without the `ignore`d ones (arguments that may differ without
    making it another call). None when the text is not such a reply."""
    calls = read_tool_calls(text)
    if calls is None:
        return None
    out = []
    for call in calls:
        args = call["arguments"]
        args = (
            {k: v for k, v in args.items() if k not in ignore} if isinstance(args, dict) else args
        )
        out.append({"name": call["name"], "arguments": args})
    return canonical(out)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def leaves(value: Any) -> dict[str, str]:
    """Path (JSON pointer, RFC 6901) -> the canonical text of each leaf (a scalar, or an empty
    object or array), at most MAX_LEAVES of them, walked without recursion."""
    out: dict[str, str] = {}
    todo: list[tuple[str, Any]] = [("", value)]
    while todo and len(out) < MAX_LEAVES:
        path, item = todo.pop()
        if isinstance(item, dict) and item:
            todo += [(f"{path}/{_escape(str(k))}", v) for k, v in reversed(list(item.items()))]
        elif isinstance(item, list) and item:
            todo += [(f"{path}/{i}", v) for i, v in reversed(list(enumerate(item)))]
        else:
            out[path] = canonical(item)
    return out


def assemble(fields: dict[str, str]) -> Any:
    """The JSON value whose leaves are `fields` (path -> canonical text); a path whose parts
    are all digits under one parent makes an array."""
    if "" in fields:
        return json.loads(fields[""])
    root: dict[str, Any] = {}
    for path, text in fields.items():
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = json.loads(text)
    return _arrays(root)


def _arrays(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _arrays(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items
