"""Issue 25 items 3 and 6, through the openai SDK: the Responses API (plain, streamed, with
instructions, a stored conversation continued by previous_response_id, refusals), the SDK's
models.retrieve, and the `developer` role read as `system`; issue 26: text.format and
function tools on the Responses API (function_call items, streamed, a tool-calling loop)."""

from __future__ import annotations

import httpx
import openai
import pytest

from ..conftest import Server
from .tooldefs import WEATHER as CHAT_WEATHER
from .tooldefs import flat


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def test_a_response_is_the_chat_completion_of_its_input(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="smollm2", input="What is the capital of France?", max_output_tokens=12, temperature=0
    )
    chat = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12,
        temperature=0,
    )
    assert r.object == "response" and r.status in ("completed", "incomplete")
    assert r.output_text == chat.choices[0].message.content  # same prompt, greedy: same text
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.usage.output_tokens == chat.usage.completion_tokens
    if chat.choices[0].finish_reason == "length":
        assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"


def test_instructions_items_and_the_ponder_object(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="smollm2+majority_vote@4",
        instructions="Answer with a number only.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "What is 2 + 3?"}]}],
        max_output_tokens=8,
        temperature=0.7,
        extra_body={"ponder": {"answer": {"format": "number"}}},
    )
    meta = r.model_extra["ponder"]
    assert meta["strategy"] == "majority_vote" and meta["generated"] == 4
    assert r.output_text and r.instructions == "Answer with a number only."


def test_a_streamed_response_has_the_events_and_the_text(client: openai.OpenAI) -> None:
    kw = {"model": "smollm2", "input": "Say hello.", "max_output_tokens": 10, "temperature": 0}
    whole = client.responses.create(**kw)
    events = list(client.responses.create(stream=True, **kw))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == whole.output_text


def test_previous_response_id_continues_a_stored_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="smollm2", input="My name is Ada. Say OK.", max_output_tokens=6, temperature=0
    )
    again = client.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == first.output_text
    follow = client.responses.create(
        model="smollm2",
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=6,
        temperature=0,
    )
    history = [
        {"role": "user", "content": "My name is Ada. Say OK."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my name?"},
    ]
    chat = client.chat.completions.create(
        model="smollm2", messages=history, max_tokens=6, temperature=0
    )
    assert follow.output_text == chat.choices[0].message.content
    assert follow.usage.input_tokens == chat.usage.prompt_tokens
    unstored = client.responses.create(
        model="smollm2", input="Hi", max_output_tokens=2, store=False
    )
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_nope"}, "previous_response_id"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "strin"}}}},
            "text.format.schema",
        ),
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"tools": [{"type": "function", "name": "no spaces"}]}, "tools.0.name"),
        ({"input": [{"type": "input_image", "image_url": "x"}]}, "input.0.type"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input.0"),
        (
            {
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": "g"},
            },
            "tool_choice",
        ),
    ],
)
def test_what_is_not_supported_is_a_clear_400(
    client: openai.OpenAI, extra: dict, param: str
) -> None:
    kw = {"model": "smollm2", "input": "Hi", "max_output_tokens": 2, **extra}
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(**kw)
    assert err.value.body["param"] == param
    assert client.models.list().data


def test_models_retrieve(client: openai.OpenAI) -> None:
    assert client.models.retrieve("smollm2").id == "smollm2"
    alias = client.models.retrieve("smollm2+majority_vote@8")
    assert alias.id == "smollm2+majority_vote@8" and alias.model_extra["root"] == "smollm2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("smollm2+nonsense")


def test_developer_messages_are_system_messages(server: Server) -> None:
    def ids(role: str) -> list[int]:
        messages = [{"role": role, "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        r = httpx.post(f"{server.base_url}/tokenize", json={"messages": messages})
        return list(r.json()["tokens"])

    assert ids("developer") == ids("system")


def test_a_streamed_vote_reports_progress_and_its_decision(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model="smollm2+majority_vote@4:t0.7",
            input="What is 2 + 3? Answer with a number only.",
            max_output_tokens=8,
            stream=True,
            extra_body={"ponder": {"answer": {"format": "number"}}},
        )
    )
    progress = [
        e.response.model_extra["ponder"]["progress"]
        for e in events
        if e.type == "response.in_progress" and "ponder" in (e.response.model_extra or {})
    ]
    assert progress and progress[-1]["done"] == 4 and progress[-1]["total"] == 4
    last = events[-1].response
    assert last.model_extra["ponder"]["generated"] == 4
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == last.output_text


def test_text_format_is_a_structured_output(client: openai.OpenAI) -> None:
    """text.format json_schema (the Responses API's flat form) constrains the reply, as
    response_format does on chat (issue 26)."""
    import json

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    r = client.responses.create(
        model="smollm2",
        input="Carlos is 78 years old. Give his name and age.",
        max_output_tokens=120,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "person", "schema": schema}},
    )
    obj = json.loads(r.output_text)
    assert set(obj) == {"name", "age"} and isinstance(obj["age"], int)
    assert r.text.format.type == "json_schema"


WEATHER = flat(CHAT_WEATHER)


def test_a_required_tool_call_is_a_function_call_item(client: openai.OpenAI) -> None:
    import json

    r = client.responses.create(
        model="smollm2",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=120,
        temperature=0,
    )
    (call,) = r.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert r.tools[0].name == "get_weather" and r.tool_choice == "required"


def test_a_tool_calling_loop_on_the_responses_api(client: openai.OpenAI) -> None:
    """call → function_call_output → a final answer in words, both by passing the items
    back in `input` and by previous_response_id; the two render the same prompt."""
    first = client.responses.create(
        model="smollm2",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=120,
        temperature=0,
    )
    (call,) = first.output
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 C"}
    by_id = client.responses.create(
        model="smollm2",
        previous_response_id=first.id,
        input=[result],
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=20,
        temperature=0,
    )
    items = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        result,
    ]
    by_items = client.responses.create(
        model="smollm2",
        input=items,
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=20,
        temperature=0,
    )
    assert by_id.output[0].type == "message" and by_id.output_text
    assert by_id.output_text == by_items.output_text
    assert by_id.usage.input_tokens == by_items.usage.input_tokens


def test_a_streamed_function_call(client: openai.OpenAI) -> None:
    kw = {
        "model": "smollm2",
        "input": "What is the weather in Rome?",
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_output_tokens": 120,
        "temperature": 0,
    }
    events = list(client.responses.create(stream=True, **kw))
    kinds = [e.type for e in events]
    assert "response.output_text.delta" not in kinds
    items = [e for e in events if "output_item" in e.type or "function_call" in e.type]
    assert [e.type for e in items] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    final = events[-1].response.output[0]
    assert final.type == "function_call" and done.arguments == final.arguments
    assert items[0].item.arguments == "" and items[3].item.arguments == final.arguments
