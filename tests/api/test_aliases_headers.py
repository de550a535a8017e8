"""Issue 25 items 4, 5 and 8: aliases that carry their own temperature (and the operator's
named aliases), /v1/models saying what each alias does, the decision in response headers
(read through the openai SDK's raw response and LangChain's ChatOpenAI), and `n` said when
fewer distinct answers come back."""

from __future__ import annotations

from urllib.parse import unquote

import openai
import pytest

from ..conftest import Server

Q = [{"role": "user", "content": "What is 3 + 4? Answer with a number."}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("model", ["smollm2+majority_vote@4:t0.7", "vote4"])
def test_an_alias_temperature_makes_a_vote_whatever_the_client_sends(
    client: openai.OpenAI, model: str
) -> None:
    r = client.chat.completions.create(model=model, messages=Q, max_tokens=8, temperature=0)
    meta = r.model_extra["ponder"]
    assert meta["generated"] == 4  # not one greedy sample
    assert "0.7" in meta["notes"]["temperature"]
    plain = client.chat.completions.create(
        model="smollm2+majority_vote@4", messages=Q, max_tokens=8, temperature=0
    )
    assert plain.model_extra["ponder"]["generated"] == 1  # without :tT, greedy is one sample


def test_models_say_what_each_alias_does(client: openai.OpenAI) -> None:
    cards = {m.id: m.model_extra.get("ponder") for m in client.models.list().data}
    assert cards["vote4"] == {
        "strategy": "majority_vote",
        "samples": 4,
        "temperature": 0.7,
        "spec": "smollm2+majority_vote@4:t0.7",
    }
    assert cards["smollm2+rpc"] == {"strategy": "rpc", "samples": None, "temperature": None}
    assert client.models.retrieve("vote4").model_extra["ponder"]["samples"] == 4


def test_the_decision_is_in_the_response_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2+majority_vote@4:t0.7",
        messages=Q,
        max_tokens=8,
        extra_body={"ponder": {"answer": {"format": "number"}}},
    )
    body = raw.parse().model_extra["ponder"]
    h = raw.headers
    assert h["x-ponder-strategy"] == "majority_vote" and h["x-ponder-samples"] == "4"
    assert float(h["x-ponder-confidence"]) == pytest.approx(body["confidence"], abs=1e-4)
    if body["answer"] is not None:
        assert unquote(h["x-ponder-answer"]) == body["answer"]
    plain = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=Q, max_tokens=2
    )
    assert "x-ponder-strategy" not in plain.headers  # nothing decided


def test_langchain_reads_the_headers(server: Server) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="vote4",
        base_url=f"{server.base_url}/v1",
        api_key="unused",
        max_tokens=8,
        include_response_headers=True,
        max_retries=0,
    )
    msg = llm.invoke("What is 3 + 4? Answer with a number.")
    headers = msg.response_metadata["headers"]
    assert headers["x-ponder-strategy"] == "majority_vote"
    assert headers["x-ponder-samples"] == "4"
    assert 0.0 <= float(headers["x-ponder-confidence"]) <= 1.0


def test_fewer_choices_than_n_are_said(client: openai.OpenAI) -> None:
    """Item 8: choices are distinct answers; when the samples hold fewer than `n`, the ponder
    object says how many were asked and why fewer came back (here temperature 0: one greedy
    sample, so one answer)."""
    r = client.chat.completions.create(
        model="smollm2+majority_vote@4", messages=Q, max_tokens=8, temperature=0, n=3
    )
    assert len(r.choices) == 1
    note = r.model_extra["ponder"]["notes"]["n"]
    assert note.startswith("3 choices asked, 1 returned")


def test_min_tokens_and_ignore_eos_are_honoured(client: openai.OpenAI) -> None:
    """Item 7: vLLM's `ignore_eos` (load-testing tools send it) and `min_tokens`, implemented
    rather than accepted and ignored."""
    q = [{"role": "user", "content": "What is 2 + 2? Answer with a number only."}]
    kw = {"model": "smollm2", "messages": q, "max_tokens": 40, "seed": 1, "temperature": 0.7}
    short = client.chat.completions.create(**kw)
    assert short.choices[0].finish_reason == "stop" and short.usage.completion_tokens < 24
    raw = client.chat.completions.with_raw_response.create(**kw, extra_body={"ignore_eos": True})
    full = raw.parse()
    assert full.usage.completion_tokens == 40 and full.choices[0].finish_reason == "length"
    assert "ignore_eos" not in raw.headers.get("x-ponder-ignored-fields", "")
    held = client.chat.completions.create(**kw, extra_body={"min_tokens": 24})
    assert held.usage.completion_tokens >= 24
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2", messages=q, max_tokens=4, extra_body={"min_tokens": 5}
        )
    assert err.value.body["param"] == "min_tokens"
