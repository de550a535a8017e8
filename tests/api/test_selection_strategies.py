"""Self-certainty and RPC through the real server: same samples, scores recomputable."""

from __future__ import annotations

import math
from collections import defaultdict

import openai
import pytest

from ..conftest import Server

Q = [{"role": "user", "content": "Tom has 3 apples and buys 5 more. How many apples now?"}]
N = 8


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def runs(client: openai.OpenAI) -> dict[str, dict]:
    out = {}
    for strategy in ("majority_vote", "self_certainty", "rpc"):
        r = client.chat.completions.create(
            model="smollm2",
            messages=Q,
            max_tokens=48,
            seed=123,
            temperature=0.9,
            extra_body={
                "ponder": {
                    "strategy": strategy,
                    "samples": N,
                    "include_candidates": True,
                    "answer": {"format": "number"},
                }
            },
        )
        out[strategy] = {"resp": r, "ponder": r.model_extra["ponder"]}
    return out


def test_same_seed_same_samples_for_every_strategy(runs: dict[str, dict]) -> None:
    texts = {s: [c["text"] for c in run["ponder"]["candidates"]] for s, run in runs.items()}
    assert texts["majority_vote"] == texts["self_certainty"] == texts["rpc"]
    assert len(set(texts["rpc"])) > 1
    for run in runs.values():
        p = run["ponder"]
        assert p["exact"] is True
        assert run["resp"].choices[0].message.content == p["candidates"][p["chosen"]]["text"]
        assert sum(t["votes"] for t in p["tally"]) + p["unanswered"] == N


def _by_answer(cands: list[dict], value) -> dict[str, float]:
    acc: dict[str, float] = defaultdict(float)
    for c in cands:
        if c["answer"] is not None:
            acc[c["answer"]] += value(c)
    return acc


def test_self_certainty_scores_recompute_from_candidates(runs: dict[str, dict]) -> None:
    p = runs["self_certainty"]["ponder"]
    cands = p["candidates"]
    order = sorted(range(N), key=lambda i: -cands[i]["self_certainty"])
    points = [0.0] * N
    for r, i in enumerate(order, start=1):
        if cands[i]["answer"] is not None:
            points[i] = (N - r + 1) ** 0.5
    for i, c in enumerate(cands):
        assert c["borda_points"] == pytest.approx(points[i])
        assert c["self_certainty"] > 0
    expected = _by_answer(cands, lambda c: points[c["index"]])
    assert {t["answer"]: t["score"] for t in p["tally"]} == pytest.approx(dict(expected))
    if p["tally"]:
        total = sum((N - r + 1) ** 0.5 for r in range(1, N + 1))  # every rank's points
        assert p["confidence"] == pytest.approx(max(expected.values()) / total)
        winners = [c for c in cands if c["answer"] == p["answer"]]
        assert cands[p["chosen"]]["self_certainty"] == max(c["self_certainty"] for c in winners)


def test_rpc_scores_recompute_from_candidates(runs: dict[str, dict]) -> None:
    p = runs["rpc"]["ponder"]
    cands = p["candidates"]
    assert p["notes"]["pruning"] in ("applied", "skipped: the Weibull mixture fit failed")
    scores: dict[str, float] = defaultdict(float)
    seen: set[str] = set()
    for c in cands:
        assert c["path_probability"] == pytest.approx(math.exp(c["mean_logprob"]), rel=1e-6)
        if c["answer"] is None or c["pruned"] or c["text"] in seen:
            continue
        seen.add(c["text"])
        scores[c["answer"]] += c["path_probability"]
    got = {t["answer"]: t["score"] for t in p["tally"]}
    assert got == pytest.approx({a: scores.get(a, 0.0) for a in got})
    best = max(c["path_probability"] for c in cands)
    assert not any(c["pruned"] for c in cands if c["path_probability"] == best)
    unanswered = {c["text"]: c["path_probability"] for c in cands if c["answer"] is None}
    if p["tally"] and sum(got.values()) > 0:
        total = sum(got.values()) + sum(unanswered.values())  # unanswered weigh in
        assert p["confidence"] == pytest.approx(p["tally"][0]["score"] / total)


def test_best_of_n_and_plain_pc_options(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2+self_certainty@4",
        messages=Q,
        max_tokens=32,
        seed=5,
        extra_body={"ponder": {"self_certainty": {"vote": False}, "include_candidates": True}},
    )
    p = r.model_extra["ponder"]
    assert p["strategy"] == "self_certainty" and p["notes"]["mode"] == "best_of_n"
    answered = [c for c in p["candidates"] if c["answer"] is not None] or p["candidates"]
    assert p["chosen"] == max(answered, key=lambda c: (c["self_certainty"], -c["index"]))["index"]
    r = client.chat.completions.create(
        model="smollm2+rpc@4",
        messages=Q,
        max_tokens=32,
        seed=5,
        extra_body={"ponder": {"rpc": {"prune": False}, "include_candidates": True}},
    )
    p = r.model_extra["ponder"]
    assert p["notes"]["pruning"] == "off" and not any(c["pruned"] for c in p["candidates"])


def test_bad_strategy_options_are_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2",
            messages=Q,
            extra_body={
                "ponder": {"strategy": "self_certainty", "self_certainty": {"borda_p": -1}}
            },
        )
    assert err.value.body["param"] == "ponder.self_certainty.borda_p"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2", messages=Q, extra_body={"ponder": {"rpc": {"prun": True}}}
        )
    assert err.value.body["param"] == "ponder.rpc.prun"
