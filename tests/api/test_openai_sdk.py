"""The real server (uvicorn on loopback, embedded SmolLM2) driven by the `openai` SDK."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from ..conftest import Server

Q = [{"role": "user", "content": "What is 3 + 4? Answer with a number."}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def ponder(resp) -> dict:
    return resp.model_extra["ponder"]


def test_health_ready_models(server: Server, client: openai.OpenAI) -> None:
    assert httpx.get(f"{server.base_url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.base_url}/ready").status_code == 200
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "smollm2"
    assert "smollm2+majority_vote" in ids


def test_chat_plain(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="smollm2", messages=Q, max_tokens=16, seed=1)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 16 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert "ponder" not in (r.model_extra or {})


def test_completions_endpoint(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=8, temperature=0, logprobs=2
    )
    assert r.object == "text_completion" and r.choices[0].text
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) and all(x <= 0 for x in lp.token_logprobs)
    assert all(len(t) == 2 for t in lp.top_logprobs)


def test_majority_vote_metadata_invariants(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2",
        messages=Q,
        max_tokens=24,
        seed=7,
        extra_body={
            "ponder": {"strategy": "majority_vote", "samples": 6, "include_candidates": True}
        },
    )
    p = ponder(r)
    assert p["strategy"] == "majority_vote" and p["samples"] == 6 and p["generated"] == 6
    assert sum(t["votes"] for t in p["tally"]) + p["unanswered"] == p["generated"]
    if p["tally"]:
        assert p["confidence"] == pytest.approx(p["tally"][0]["share"])
        assert p["answer"] == p["tally"][0]["answer"]
    cands = p["candidates"]
    assert len(cands) == 6
    assert cands[p["chosen"]]["text"] == r.choices[0].message.content
    assert cands[p["chosen"]]["answer"] == p["answer"]
    assert r.usage.completion_tokens == sum(c["tokens"] for c in cands)
    assert p["exact"] is True and p["timing"]["generate_s"] > 0


def test_alias_selects_strategy_and_samples(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2+majority_vote@3", messages=Q, max_tokens=16, seed=3
    )
    p = ponder(r)
    assert p["strategy"] == "majority_vote" and p["generated"] == 3
    assert r.model == "smollm2+majority_vote@3"


def test_seed_reproducibility(client: openai.OpenAI) -> None:
    body = {"ponder": {"strategy": "majority_vote", "samples": 4, "include_candidates": True}}
    a = client.chat.completions.create(
        model="smollm2", messages=Q, max_tokens=16, seed=42, extra_body=body
    )
    b = client.chat.completions.create(
        model="smollm2", messages=Q, max_tokens=16, seed=42, extra_body=body
    )
    assert [c["text"] for c in ponder(a)["candidates"]] == [
        c["text"] for c in ponder(b)["candidates"]
    ]
    assert a.choices[0].message.content == b.choices[0].message.content


def test_openai_n(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2", messages=Q, max_tokens=8, n=3, temperature=1.0, seed=5
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    r = client.chat.completions.create(
        model="smollm2",
        messages=Q,
        max_tokens=24,
        n=2,
        seed=9,
        temperature=1.2,
        extra_body={"ponder": {"strategy": "majority_vote", "samples": 8}},
    )
    p = ponder(r)
    assert 1 <= len(r.choices) <= 2
    if len(p["tally"]) >= 2:
        assert len(r.choices) == 2


def test_stream_none_is_token_by_token(client: openai.OpenAI) -> None:
    kw = {"model": "smollm2", "messages": Q, "max_tokens": 24, "seed": 11}
    chunks = list(
        client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 2
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    whole = client.chat.completions.create(**kw)
    assert "".join(pieces) == whole.choices[0].message.content


def test_stream_majority_vote_buffered(server: Server, client: openai.OpenAI) -> None:
    body = {
        "model": "smollm2",
        "messages": Q,
        "max_tokens": 16,
        "seed": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ponder": {"strategy": "majority_vote", "samples": 4},
    }
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120
    ) as resp:
        lines = [ln for ln in resp.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(ln[6:]) for ln in lines if ln.startswith("data: {")]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"  # at once, before sampling
    progress = [e["ponder"]["progress"] for e in events if "progress" in e.get("ponder", {})]
    assert progress[0] == {"done": 0, "total": 4} and progress[-1] == {"done": 4, "total": 4}
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    final, last = events[-2], events[-1]
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    assert final["ponder"]["generated"] == 4
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
    plain = dict(body, stream=False)
    plain.pop("stream_options")
    full = httpx.post(f"{server.base_url}/v1/chat/completions", json=plain, timeout=120).json()
    assert text == full["choices"][0]["message"]["content"]
    sdk = list(
        client.chat.completions.create(
            model="smollm2",
            messages=Q,
            max_tokens=16,
            seed=2,
            stream=True,
            extra_body={"ponder": {"strategy": "majority_vote", "samples": 4}},
        )
    )
    assert sdk[-1].model_extra["ponder"]["answer"] == full["ponder"]["answer"]


def test_errors_are_openai_envelopes(server: Server, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="gpt-4", messages=Q)
    assert nf.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="smollm2+telepathy", messages=Q)
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(
            model="smollm2", messages=Q, extra_body={"ponder": {"strategy": "telepathy"}}
        )
    assert nf.value.body["param"] == "ponder.strategy"
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(
            model="smollm2",
            messages=Q,
            extra_body={"ponder": {"strategy": "majority_vote", "samples": 1000}},
        )
    assert br.value.body["param"] == "ponder.samples"
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model="smollm2", messages=Q, temperature=5)
    assert br.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model="smollm2", messages=Q, max_tokens=100000)
    assert br.value.body["param"] == "max_tokens"  # over the server's max_tokens limit
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(
            model="smollm2+majority_vote@8", messages=Q, max_tokens=4000
        )  # fits the limits, not the 8192-token KV cache of the test server
    assert br.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(
            model="smollm2",
            messages=Q,
            extra_body={
                "ponder": {
                    "strategy": "majority_vote",
                    "answer": {"format": "regex", "pattern": "(x"},
                }
            },
        )
    assert br.value.body["param"] == "ponder.answer.pattern"
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model="smollm2", messages=[])
    assert br.value.body["param"] == "messages"
    raw = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
    nan = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        content=b'{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], '
        b'"temperature": NaN}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 400 and "finite" in nan.json()["error"]["message"]
    assert httpx.get(f"{server.base_url}/nope").json()["error"]["type"]
    assert httpx.get(f"{server.base_url}/ready").status_code == 200


def test_unknown_fields_from_other_tools_are_accepted(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2",
        messages=Q,
        max_tokens=4,
        extra_body={"optillm_approach": "bon", "k": 3, "top_k": 40, "user": "u1"},
    )
    assert r.choices[0].message.content is not None
    # accepted, and said: fields no server defines are named in a header (not `user`,
    # which changes nothing, nor `top_k`, which Ponder implements)
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2",
        messages=Q,
        max_tokens=4,
        extra_body={"optillm_approach": "bon", "k": 3, "top_k": 40, "user": "u1"},
    )
    assert raw.headers["x-ponder-ignored-fields"] == "k, optillm_approach"
