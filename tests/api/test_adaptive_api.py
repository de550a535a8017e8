"""Adaptive stopping through the real server: an easy question stops early, a split one draws
the whole budget, and the samples drawn are the fixed-budget run's first ones."""

from __future__ import annotations

import json

import httpx
import pytest

from ..conftest import Server

EASY = [{"role": "user", "content": "How many days are in a week?"}]
SPLIT = [{"role": "user", "content": "Pick a random number between 1 and 100."}]


def ask(server: Server, messages: list, adaptive: dict | None, **kw: object) -> dict:
    ponder: dict = {
        "strategy": "majority_vote",
        "samples": 16,
        "answer": {"format": "number"},
        "include_candidates": True,
    }
    if adaptive is not None:
        ponder["adaptive"] = adaptive
    body = {"model": "smollm2", "messages": messages, "max_tokens": 48, "seed": 1, **kw}
    r = httpx.post(
        f"{server.base_url}/v1/chat/completions", json={**body, "ponder": ponder}, timeout=600
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.parametrize("adaptive", [{"method": "beta"}, {"method": "window", "window": 3}])
def test_an_easy_question_stops_early(server: Server, adaptive: dict) -> None:
    fixed = ask(server, EASY, None)
    early = ask(server, EASY, adaptive)
    p = early["ponder"]
    assert p["stopped"] == "settled" and p["samples"] == 16 and p["generated"] < 16
    assert p["answer"] == fixed["ponder"]["answer"] == "7"
    # the samples drawn are the fixed-budget run's first ones (sample i seeded seed + i)
    texts = [c["text"] for c in p["candidates"]]
    assert texts == [c["text"] for c in fixed["ponder"]["candidates"][: len(texts)]]
    # usage counts what was generated (samples cut mid-wave too), and it is less
    assert early["usage"]["completion_tokens"] >= sum(c["tokens"] for c in p["candidates"])
    assert early["usage"]["completion_tokens"] < fixed["usage"]["completion_tokens"]
    assert "stopped" not in fixed["ponder"]


def test_a_split_question_draws_the_whole_budget(server: Server) -> None:
    p = ask(server, SPLIT, {"method": "beta"}, temperature=1.0)["ponder"]
    assert p["stopped"] == "ceiling" and p["generated"] == 16


def test_streams_say_when_and_why_sampling_stopped(server: Server) -> None:
    body = {
        "model": "smollm2",
        "messages": EASY,
        "max_tokens": 48,
        "seed": 1,
        "stream": True,
        "ponder": {
            "strategy": "majority_vote",
            "samples": 16,
            "answer": {"format": "number"},
            "adaptive": {"method": "window", "window": 3},
        },
    }
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=600
    ) as resp:
        events = [json.loads(ln[6:]) for ln in resp.iter_lines() if ln.startswith("data: {")]
    progress = [e["ponder"]["progress"] for e in events if "progress" in e.get("ponder", {})]
    assert progress[-1]["stopped"] == "settled" and progress[-1]["done"] < 16
    final = next(e for e in events if e["choices"] and e["choices"][0]["finish_reason"])
    assert final["ponder"]["stopped"] == "settled"


@pytest.mark.parametrize(
    ("ponder", "param"),
    [
        ({"strategy": "none", "adaptive": {"method": "beta"}}, "ponder.adaptive"),
        (
            {"strategy": "rpc", "samples": 4, "adaptive": {"method": "window", "window": 6}},
            "ponder.adaptive.window",
        ),
        ({"strategy": "rpc", "adaptive": {"method": "beta", "threshold": 1.5}}, None),
        ({"strategy": "rpc", "adaptive": {"method": "often"}}, None),
    ],
)
def test_bad_adaptive_requests_are_400(server: Server, ponder: dict, param: str | None) -> None:
    body = {"model": "smollm2", "messages": EASY, "max_tokens": 4, "ponder": ponder}
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert param is None or r.json()["error"]["param"] == param


def test_the_other_methods_parameter_is_refused_not_ignored(server: Server) -> None:
    for adaptive in ({"method": "beta", "window": 3}, {"method": "window", "threshold": 0.9}):
        body = {
            "model": "smollm2",
            "messages": EASY,
            "max_tokens": 4,
            "ponder": {"strategy": "majority_vote", "samples": 8, "adaptive": adaptive},
        }
        r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400 and "does not apply" in r.json()["error"]["message"]


def test_the_rule_stops_a_wave_midway_and_frees_the_engine(server: Server) -> None:
    """One wave of 16: the rule fires as soon as the first two samples have finished and
    agree, and the engine stops the ones still running (cut short, paid for, not voting)."""
    fixed = ask(server, EASY, None, max_tokens=64)
    early = ask(server, EASY, {"method": "window", "window": 2, "wave": 16}, max_tokens=64)
    p = early["ponder"]
    assert p["stopped"] == "settled" and 2 <= p["generated"] < 16
    texts = [c["text"] for c in p["candidates"]]
    assert texts == [c["text"] for c in fixed["ponder"]["candidates"][: len(texts)]]
    kept = sum(c["tokens"] for c in p["candidates"])
    assert kept < early["usage"]["completion_tokens"] < fixed["usage"]["completion_tokens"]
    # the engine is free at once: a short request is answered
    r = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "smollm2", "messages": EASY, "max_tokens": 2},
        timeout=60,
    )
    assert r.status_code == 200


def test_cntp_with_a_vote_stops_when_its_decodes_agree(server: Server) -> None:
    body = {
        "model": "smollm2",
        "prompt": "Q: How many days are in a week?\nA: There are",
        "max_tokens": 6,
        "seed": 3,
        "ponder": {
            "strategy": "cntp",
            "samples": 8,
            "answer": {"format": "number"},
            "include_candidates": True,
            "adaptive": {"method": "window", "window": 2, "wave": 2},
        },
    }
    r = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text
    p = r.json()["ponder"]
    assert p["stopped"] == "settled" and p["generated"] < 8 and p["generated"] % 2 == 0
    answers = [c["answer"] for c in p["candidates"]]
    assert answers[-1] == answers[-2] == p["answer"] is not None
