"""CNTP through the real server: metadata, usage, streaming, CNTP + self-consistency."""

from __future__ import annotations

import openai
import pytest

from ..conftest import Server

Q = [{"role": "user", "content": "Write two short sentences about rain."}]
ALWAYS = {"entropy_low": -2.0, "entropy_high": -1.0}


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def test_cntp_metadata_and_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2+cntp",
        messages=Q,
        max_tokens=40,
        seed=3,
        extra_body={"ponder": {"cntp": ALWAYS, "include_candidates": True}},
    )
    p = r.model_extra["ponder"]
    notes = p["notes"]
    assert p["strategy"] == "cntp" and p["samples"] == 1 and p["generated"] == 1
    assert notes["branched_steps"] == len(notes["steps"]) >= 1
    assert notes["trials"] == 10 * notes["branched_steps"]
    # with thresholds that always branch, every generated token is a trial token
    assert r.usage.completion_tokens == notes["trial_tokens"]
    assert r.usage.completion_tokens > p["candidates"][0]["tokens"]
    for step in notes["steps"]:
        assert step["perplexities"][step["chosen"]] == min(step["perplexities"])
    cand = p["candidates"][0]
    assert p["confidence"] == pytest.approx(2.718281828459045 ** cand["mean_logprob"])
    assert r.choices[0].message.content == cand["text"]


def test_cntp_never_branching_is_plain_sampling(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2",
        messages=Q,
        max_tokens=24,
        seed=3,
        extra_body={
            "ponder": {"strategy": "cntp", "cntp": {"entropy_low": 100, "entropy_high": 200}}
        },
    )
    p = r.model_extra["ponder"]
    assert p["notes"] == {"branched_steps": 0, "trials": 0, "trial_tokens": 0}


def test_cntp_streams_segments_equal_to_the_whole(client: openai.OpenAI) -> None:
    kw = {"model": "smollm2+cntp", "messages": Q, "max_tokens": 40, "seed": 8}
    chunks = list(
        client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 1
    final, last = chunks[-2], chunks[-1]
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.model_extra["ponder"]["strategy"] == "cntp"
    assert last.choices == [] and last.usage is not None  # usage on its own chunk
    whole = client.chat.completions.create(**kw)
    assert "".join(pieces) == whole.choices[0].message.content
    assert last.usage.completion_tokens == whole.usage.completion_tokens


def test_cntp_with_self_consistency(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is 2 + 2?"}],
        max_tokens=24,
        seed=1,
        extra_body={"ponder": {"strategy": "cntp", "samples": 3, "include_candidates": True}},
    )
    p = r.model_extra["ponder"]
    assert p["strategy"] == "cntp" and p["generated"] == 3
    assert sum(t["votes"] for t in p["tally"]) + p["unanswered"] == 3
    if p["tally"]:
        assert p["confidence"] == pytest.approx(p["tally"][0]["votes"] / 3)
    cands = p["candidates"]
    assert p["notes"]["trials"] == sum(c["trials"] for c in cands)
    assert r.usage.completion_tokens >= sum(c["tokens"] for c in cands)


def test_cntp_bad_options(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2+cntp",
            messages=Q,
            extra_body={"ponder": {"cntp": {"entropy_low": 2, "entropy_high": 1}}},
        )
    assert err.value.body["param"] == "ponder.cntp"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2+cntp", messages=Q, extra_body={"ponder": {"cntp": {"max_trials": 0}}}
        )
    assert err.value.body["param"] == "ponder.cntp.max_trials"


@pytest.mark.parametrize("samples", [1, 3])
def test_cntp_timing_is_wall_clock(client: openai.OpenAI, samples: int) -> None:
    """queue + generate + select never exceed the request's wall time (they summed the
    decodes' own times: a median of 116 s for 15 s of wall time with CNTP + vote)."""
    import time

    t0 = time.perf_counter()
    r = client.chat.completions.create(
        model=f"smollm2+cntp@{samples}", messages=Q, max_tokens=24, seed=4
    )
    wall = time.perf_counter() - t0
    timing = r.model_extra["ponder"]["timing"]
    spent = timing["queue_s"] + timing["generate_s"] + timing["select_s"]
    assert timing["generate_s"] > 0 and spent <= wall
