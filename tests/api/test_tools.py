"""Issue 26 item 3, through the openai SDK against the embedded model (SmolLM2's template has
no tools: the generic tool prompt, with the calls' schema constraining the reply when a tool
must be called): tool_calls in OpenAI's shape, streamed as tool-call deltas, a tool-calling
loop, a vote over calls."""

from __future__ import annotations

import json

import openai
import pytest

from ..conftest import Server
from .tooldefs import TIME, WEATHER

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
JSON_OBJECT = {"type": "json_object"}


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def test_a_required_call_comes_back_as_tool_calls(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=60,
        seed=1,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


def test_a_named_function_and_one_call_at_a_time(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        max_tokens=60,
        seed=2,
    )
    calls = r.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_time"]


def test_a_tool_calling_loop(client: openai.OpenAI) -> None:
    """call -> the tool's result as a tool message -> the final answer in words."""
    first = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=60,
        seed=3,
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    messages = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C."},
    ]
    final = client.chat.completions.create(
        model="smollm2",
        messages=messages,
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=40,
        seed=3,
    )
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


def test_tool_calls_stream_as_deltas(client: openai.OpenAI) -> None:
    kw = {"model": "smollm2", "messages": ASK, "tools": [WEATHER], "max_tokens": 60, "seed": 4}
    whole = client.chat.completions.create(tool_choice="required", **kw)
    chunks = list(client.chat.completions.create(tool_choice="required", stream=True, **kw))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    want = whole.choices[0].message.tool_calls or []
    assert deltas and [d.index for d in deltas] == list(range(len(want)))
    got = [(d.function.name, d.function.arguments) for d in deltas]
    assert got == [(w.function.name, w.function.arguments) for w in want]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_auto_answers_in_words_or_with_a_call(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2", messages=ASK, tools=[WEATHER], max_tokens=60, seed=5
    )
    choice = r.choices[0]
    if choice.finish_reason == "tool_calls":
        assert choice.message.tool_calls and choice.message.content is None
    else:
        assert choice.message.content is not None and not choice.message.tool_calls


def test_a_vote_over_tool_calls(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2+majority_vote@4:t0.8",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=60,
        seed=6,
        extra_body={"ponder": {"answer": {"format": "json"}}},
    )
    meta = r.model_extra["ponder"]
    assert meta["generated"] == 4 and sum(t["votes"] for t in meta["tally"]) == 4
    winner = json.loads(meta["answer"])
    call = (r.choices[0].message.tool_calls or [])[0]
    assert winner["tool_calls"][0]["name"] == call.function.name


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools.0.function.name",
        ),
        (
            {
                "tools": [WEATHER],
                "tool_choice": "required",
                "response_format": {"type": "json_object"},
            },
            "response_format",
        ),
    ],
)
def test_bad_tool_requests_are_400s(client: openai.OpenAI, extra: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=8, **extra)
    assert err.value.body["param"] == param


def test_the_sdks_parse_with_a_pydantic_function_tool(client: openai.OpenAI) -> None:
    from pydantic import BaseModel

    class GetWeather(BaseModel):
        city: str

    r = client.chat.completions.parse(
        model="smollm2",
        messages=ASK,
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        seed=7,
    )
    (call,) = r.choices[0].message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, GetWeather)


def test_a_vote_over_calls_can_ignore_arguments(client: openai.OpenAI) -> None:
    """`answer: {"format": "tool_call", "ignore_arguments": [...]}`: calls that differ only in
    those arguments are one answer."""
    r = client.chat.completions.create(
        model="smollm2+majority_vote@4:t1.0",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        seed=8,
        extra_body={"ponder": {"answer": {"format": "tool_call", "ignore_arguments": ["city"]}}},
    )
    meta = r.model_extra["ponder"]
    assert meta["tally"][0]["votes"] == 4 and meta["confidence"] == 1.0
    assert json.loads(meta["answer"]) == [{"name": "get_weather", "arguments": {}}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2+majority_vote@4",
            messages=ASK,
            max_tokens=8,
            extra_body={"ponder": {"answer": {"format": "json", "ignore_arguments": ["x"]}}},
        )
    assert err.value.body["param"] == "ponder.answer"


def test_adaptive_stopping_over_tool_calls(client: openai.OpenAI) -> None:
    """The adaptive rules read tool-call answers like any other: four samples making the same
    call (the city ignored) settle the vote after the first wave of four, not eight."""
    r = client.chat.completions.create(
        model="smollm2+majority_vote@8:t1.0",
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=60,
        seed=9,
        extra_body={
            "ponder": {
                "answer": {"format": "tool_call", "ignore_arguments": ["city"]},
                "adaptive": {"method": "window", "window": 4, "wave": 4},
            }
        },
    )
    meta = r.model_extra["ponder"]
    assert meta["generated"] == 4 and meta["stopped"] == "settled"
    assert r.choices[0].finish_reason == "tool_calls"
