"""Issue 27 items 1-3 through the real server and SmolLM2: usc, aggregate and verify, with an
extractable answer and free-form (`answer.format: "none"`); their follow-up calls in usage and
in the notes; streamed progress that counts them; bad options refused before any work."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ..conftest import Server

Q = [{"role": "user", "content": "Tom has 3 apples and buys 5 more. How many apples now?"}]
FREE = [{"role": "user", "content": "Give one tip for sleeping well, in one sentence."}]
N = 4


def ask(server: Server, ponder: dict[str, Any], messages: list = Q, **kw: Any) -> dict:
    body = {
        "model": "smollm2",
        "messages": messages,
        "max_tokens": 40,
        "seed": 11,
        "temperature": 0.9,
        "ponder": {"samples": N, "include_candidates": True, **ponder},
        **kw,
    }
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text
    return r.json()


def candidate_tokens(meta: dict) -> int:
    return sum(c["tokens"] for c in meta["candidates"])


def test_usc_picks_a_candidate_and_counts_its_call(server: Server) -> None:
    r = ask(server, {"strategy": "usc", "answer": {"format": "number"}})
    meta = r["ponder"]
    usc, calls = meta["notes"]["usc"], meta["usage"]["followup"]
    assert meta["generated"] == N and calls["calls"] == 1
    assert usc["fallback"] == (usc["picked"] is None)
    chosen = meta["chosen"]
    assert chosen == (usc["picked"] or 0)
    assert r["choices"][0]["message"]["content"] == meta["candidates"][chosen]["text"]
    assert r["usage"]["completion_tokens"] == candidate_tokens(meta) + calls["completion_tokens"]
    if meta["answer"] is not None:  # the share of candidates that agree with the pick
        same = sum(c["answer"] == meta["answer"] for c in meta["candidates"])
        assert meta["confidence"] == pytest.approx(same / N)


def test_usc_on_a_free_form_prompt(server: Server) -> None:
    r = ask(server, {"strategy": "usc", "answer": {"format": "none"}}, FREE)
    meta = r["ponder"]
    assert meta["answer"] is None and meta["confidence"] is None and meta["tally"] == []
    texts = [c["text"] for c in meta["candidates"]]
    assert r["choices"][0]["message"]["content"] in texts


def test_aggregate_writes_a_new_answer(server: Server) -> None:
    r = ask(server, {"strategy": "aggregate", "answer": {"format": "number"}})
    meta = r["ponder"]
    cands = meta["candidates"]
    assert meta["generated"] == N + 1 and meta["chosen"] == N
    assert meta["notes"]["aggregate"]["index"] == N
    assert r["choices"][0]["message"]["content"] == cands[N]["text"]
    assert sum(t["votes"] for t in meta["tally"]) + meta["unanswered"] == N  # the candidates'
    calls = meta["usage"]["followup"]
    assert r["usage"]["completion_tokens"] == candidate_tokens(meta)  # the aggregate's included
    assert calls["completion_tokens"] == cands[N]["tokens"]
    if meta["answer"] is None:
        assert meta["confidence"] is None
    else:
        same = sum(c["answer"] == meta["answer"] for c in cands[:N])
        assert meta["confidence"] == pytest.approx(same / N)


def test_aggregate_free_form_has_no_made_up_confidence(server: Server) -> None:
    r = ask(server, {"strategy": "aggregate", "answer": {"format": "none"}}, FREE)
    assert r["ponder"]["confidence"] is None and r["ponder"]["answer"] is None
    assert r["choices"][0]["message"]["content"] == r["ponder"]["candidates"][N]["text"]


def test_verify_scores_each_candidate_with_p_yes(server: Server) -> None:
    r = ask(server, {"strategy": "verify", "answer": {"format": "number"}})
    meta = r["ponder"]
    scores = [c["verification"] for c in meta["candidates"]]
    assert meta["usage"]["followup"]["calls"] == N
    assert any(s is not None for s in scores)
    assert all(s is None or 0.0 <= s <= 1.0 for s in scores)
    best = max(range(N), key=lambda i: (-1 if scores[i] is None else scores[i], -i))
    assert meta["chosen"] == best and meta["confidence"] == pytest.approx(scores[best])


def test_verify_weighted_vote_with_rationales(server: Server) -> None:
    r = ask(
        server,
        {
            "strategy": "verify",
            "answer": {"format": "number"},
            "verify": {"select": "weighted_vote", "verifications": 2, "rationale_tokens": 24},
        },
    )
    meta = r["ponder"]
    calls = meta["usage"]["followup"]
    assert calls["calls"] == N * 3  # a rationale call (2 samples) + 2 verdicts per candidate
    scores = [c["verification"] or 0.0 for c in meta["candidates"]]
    weights: dict[str, float] = {}
    for c, s in zip(meta["candidates"], scores, strict=True):
        if c["answer"] is not None:
            weights[c["answer"]] = weights.get(c["answer"], 0.0) + s
    if weights and sum(scores) > 0:
        assert meta["answer"] == max(weights, key=lambda a: weights[a])
        assert meta["confidence"] == pytest.approx(weights[meta["answer"]] / sum(scores))
    assert r["usage"]["completion_tokens"] == candidate_tokens(meta) + calls["completion_tokens"]


def test_verify_free_form_best_of_n(server: Server) -> None:
    r = ask(server, {"strategy": "verify", "answer": {"format": "none"}}, FREE)
    meta = r["ponder"]
    scores = [c["verification"] for c in meta["candidates"]]
    assert meta["answer"] is None and meta["confidence"] == scores[meta["chosen"]]


def test_streamed_progress_counts_the_follow_up_calls(server: Server) -> None:
    body = {
        "model": "smollm2",
        "messages": Q,
        "max_tokens": 32,
        "seed": 3,
        "stream": True,
        "ponder": {"strategy": "verify", "samples": N, "answer": {"format": "number"}},
    }
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=600
    ) as resp:
        events = [json.loads(ln[6:]) for ln in resp.iter_lines() if ln.startswith("data: {")]
    progress = [e["ponder"]["progress"] for e in events if "progress" in e.get("ponder", {})]
    assert progress and all(p["total"] == 2 * N for p in progress)
    assert progress[-1]["done"] == 2 * N
    final = next(e for e in events if e["choices"] and e["choices"][0]["finish_reason"])
    assert final["ponder"]["strategy"] == "verify"


@pytest.mark.parametrize(
    ("ponder", "param"),
    [
        ({"strategy": "usc", "usc": {"prompt": "Pick one: {responses}"}}, "ponder.usc.prompt"),
        ({"strategy": "verify", "verify": {"prompt": "x" * 5000}}, "ponder.verify.prompt"),
        (
            {
                "strategy": "verify",
                "answer": {"format": "none"},
                "verify": {"select": "weighted_vote"},
            },
            "ponder.verify.select",
        ),
        ({"strategy": "aggregate", "adaptive": {"method": "beta"}}, "ponder.adaptive"),
        ({"strategy": "majority_vote", "answer": {"format": "none"}}, "ponder.answer.format"),
        ({"strategy": "usc", "verify": {"verifications": 1}}, "ponder.verify"),
        (  # 8 x 8 sampled tokens, but 8 x 16 rationales of 2048 tokens: over the 65,536 limit
            {"strategy": "verify", "verify": {"verifications": 16, "rationale_tokens": 2048}},
            "max_tokens",
        ),
    ],
)
def test_bad_options_are_400s_before_any_work(
    server: Server, ponder: dict[str, Any], param: str
) -> None:
    body = {"model": "smollm2", "messages": Q, "max_tokens": 8, "ponder": ponder}
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
