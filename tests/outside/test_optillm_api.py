"""The cases of optillm's API-compatibility suite (tests/test_api_compatibility.py: 9 cases
of what an OpenAI SDK client expects), run with the openai SDK against a live server, with the
plain model and with a voting alias. Eight must pass as optillm states them; the ninth asks for
optillm's own `moa-<model>` naming, which must be a clear 404, not a plausible answer."""

from __future__ import annotations

import openai
import pytest

from ..conftest import Server

MODELS = ["smollm2", "smollm2+majority_vote@4"]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="optillm", max_retries=0)


def chat(client: openai.OpenAI, model: str, content: str, **kw: object):  # type: ignore[no-untyped-def]
    messages = [{"role": "user", "content": content}]
    return client.chat.completions.create(model=model, messages=messages, **kw)  # type: ignore[call-overload]


@pytest.mark.parametrize("model", MODELS)
def test_basic_completion(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello"},
        ],
        max_tokens=10,
    )
    assert r.choices and isinstance(r.choices[0].message.content, str)


@pytest.mark.parametrize("model", MODELS)
def test_n_parameter(client: openai.OpenAI, model: str) -> None:
    r = chat(client, model, "Write a one-line joke", n=3, temperature=0.8, max_tokens=50)
    assert len(r.choices) == 3
    assert len({c.message.content for c in r.choices}) > 1


def test_optillm_approach_prefix_is_a_clear_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        chat(client, "moa-smollm2", "What is 2+2?", max_tokens=10)
    assert err.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert "smollm2+<strategy>" in err.value.body["message"]  # type: ignore[index]


@pytest.mark.parametrize("model", MODELS)
def test_extra_body_approach_is_accepted_and_reported(client: openai.OpenAI, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "What is 2+2?"}],
        extra_body={"optillm_approach": "re2"},
        max_tokens=50,
    )
    assert raw.parse().choices
    assert raw.headers["x-ponder-ignored-fields"] == "optillm_approach"


@pytest.mark.parametrize("model", MODELS)
def test_streaming(client: openai.OpenAI, model: str) -> None:
    chunks = list(chat(client, model, "Count from 1 to 5", stream=True, max_tokens=50))
    assert chunks and chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    ("content", "n", "max_tokens"),
    [
        ("What is 15 \u00d7 23? Please think through this step by step.", 1, 100),
        ("I have 12 apples. I eat 3, give away 4, and buy 7 more. How many now?", 1, 150),
        ("Think about this: What's 2+2?", 2, 50),
        ("Say hello", 1, 10),
    ],
)
def test_reasoning_tokens_in_usage(
    client: openai.OpenAI, model: str, content: str, n: int, max_tokens: int
) -> None:
    r = chat(client, model, content, n=n, max_tokens=max_tokens)
    if "+" in model:  # a vote returns distinct answers: fewer when its samples agree, said
        assert 1 <= len(r.choices) <= n
        if len(r.choices) < n:
            assert "choices asked" in r.model_extra["ponder"]["notes"]["n"]
    else:
        assert len(r.choices) == n
    details = r.usage.completion_tokens_details
    assert details is not None and isinstance(details.reasoning_tokens, int)
    assert details.reasoning_tokens == 0  # Ponder's samples carry no hidden reasoning tokens
