"""Issue 26 item 3, a chat template's own tool form: the embedded SmolLM2 served with a ChatML
template that has tools in the Hermes form (tests/templates/hermes_tools.jinja, through
PONDER_CHAT_TEMPLATE). The template renders the tools, the history's calls and the tools'
results; a required call is constrained by the Lark grammar of `<tool_call>{...}</tool_call>`
and read back into OpenAI's tool_calls; a vote groups the calls."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jinja2
import openai
import pytest

from ..conftest import Server, start_server, stop_server
from .tooldefs import WEATHER, flat

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "hermes_tools.jinja"
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def hermes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("hermes"), {"PONDER_CHAT_TEMPLATE": str(TEMPLATE)})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def client(hermes: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{hermes.base_url}/v1", api_key="unused", max_retries=0)


def expected_tokens(server: Server, messages: list[dict[str, Any]], tools: Any) -> int:
    """The prompt's length when the test renders the template itself (jinja2, as
    transformers and llama-cpp-python do) and the server tokenizes the text."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x: json.dumps(x, ensure_ascii=False)
    text = env.from_string(TEMPLATE.read_text()).render(
        messages=messages, tools=tools, add_generation_prompt=True
    )
    r = httpx.post(f"{server.base_url}/tokenize", json={"prompt": text}, timeout=30)
    return int(r.json()["count"])


def test_the_template_renders_the_tools_and_a_call_is_its_form(
    client: openai.OpenAI, hermes: Server
) -> None:
    r = client.chat.completions.create(
        model="smollm2+majority_vote@3",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        seed=5,
        extra_body={"ponder": {"answer": {"format": "tool_call"}, "include_candidates": True}},
    )
    assert r.usage.prompt_tokens == expected_tokens(hermes, ASK, [WEATHER])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert calls and all(c.function.name == "get_weather" for c in calls)
    assert all(isinstance(json.loads(c.function.arguments)["city"], str) for c in calls)
    meta = r.model_extra["ponder"]
    texts = [c["text"] for c in meta["candidates"]]
    assert len(texts) == 3
    for text in texts:  # the template's form, constrained by its grammar
        assert text.startswith("<tool_call>\n{") and text.rstrip().endswith("</tool_call>")
    assert sum(t["votes"] for t in meta["tally"]) == 3


def test_a_tool_calling_loop_in_the_templates_form(client: openai.OpenAI, hermes: Server) -> None:
    """call → a tool message (naming no function: the server finds it by the call's id) →
    the final answer, the history rendered by the template (<tool_call>, <tool_response>)."""
    first = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        seed=6,
    )
    (call,) = first.choices[0].message.tool_calls or []
    said = first.choices[0].message.model_dump(exclude_none=True)
    messages = [*ASK, said, {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C."}]
    final = client.chat.completions.create(
        model="smollm2",
        messages=messages,
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=30,
        temperature=0,
    )
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    rendered = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": json.loads(call.function.arguments),
                    },
                }
            ],
        },
        {"role": "tool", "content": "Sunny, 24 C.", "name": "get_weather"},
    ]
    assert final.usage.prompt_tokens == expected_tokens(hermes, rendered, None)


def test_streamed_calls_are_the_whole_replys_calls(client: openai.OpenAI) -> None:
    kw: dict[str, Any] = {
        "model": "smollm2",
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 60,
        "seed": 7,
    }
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, **kw))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    want = whole.choices[0].message.tool_calls or []
    assert [(d.function.name, d.function.arguments) for d in deltas] == [
        (w.function.name, w.function.arguments) for w in want
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_the_responses_api_uses_the_templates_form(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="smollm2",
        input="What is the weather in Oslo?",
        tools=[flat(WEATHER)],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=120,
        temperature=0,
    )
    assert r.output and all(i.type == "function_call" for i in r.output)
    assert r.output[0].name == "get_weather"
