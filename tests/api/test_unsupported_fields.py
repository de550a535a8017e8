"""Fields Ponder does not act on are refused with a 400 that names them, never ignored; neutral
values (what SDKs send by default) are accepted. Through the openai SDK, real server."""

from __future__ import annotations

import openai
import pytest

from ..conftest import Server

Q = [{"role": "user", "content": "What is 2 + 3? Answer with the number."}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


TOOL = {
    "type": "function",
    "function": {"name": "add", "parameters": {"type": "object", "properties": {}}},
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("function_call", {"name": "add"}),  # (tools are implemented: issue 26)
        ("functions", [TOOL["function"]]),  # (response_format is implemented: issue 26)
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1.0),
        ("logit_bias", {"42": 5}),
    ],
)
def test_chat_fields_that_would_be_ignored_are_refused(
    client: openai.OpenAI, field: str, value: object
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smollm2", messages=Q, max_tokens=2, **{field: value})  # type: ignore[call-overload]
    body = err.value.body
    assert isinstance(body, dict)
    assert body["code"] == "unsupported_parameter" and body["param"] == field


def test_neutral_values_are_accepted(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2",
        messages=Q,
        max_tokens=2,
        presence_penalty=0,
        frequency_penalty=0,
        response_format={"type": "text"},
        tools=[],
        logit_bias={},
    )  # type: ignore[call-overload]
    assert r.choices[0].message.content is not None


def test_echo_on_chat_is_refused(client: openai.OpenAI) -> None:
    """vLLM's chat extension `echo` (prepend the last message) is not implemented: a 400."""
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2", messages=Q, max_tokens=1, extra_body={"echo": True}
        )
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "echo"


def test_malformed_tool_calls_in_history_are_refused(client: openai.OpenAI) -> None:
    """Tool calls in the history are read (issue 26); one that is not OpenAI's shape is a
    400 naming it."""
    history = [
        *Q,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{x"}}
            ],
        },
    ]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smollm2", messages=history, max_tokens=2)  # type: ignore[arg-type]
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "messages.1.tool_calls"


def test_temperature_zero_with_a_selection_strategy_draws_one_greedy_sample(
    client: openai.OpenAI,
) -> None:
    r = client.chat.completions.create(
        model="smollm2",
        messages=Q,
        max_tokens=16,
        temperature=0,
        extra_body={"ponder": {"strategy": "majority_vote", "samples": 8}},
    )
    p = r.model_extra["ponder"]
    assert p["generated"] == 1 and p["samples"] == 1
    assert "greedy" in p["notes"]["temperature"]
    assert r.usage.completion_tokens <= 16  # one sample's tokens, not eight
