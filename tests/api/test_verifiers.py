"""Issue 27 item 4: an external judge for strategy `verify`. A second Ponder server (the same
SmolLM2, plain generation) is the judge, named in the first server's PONDER_VERIFIERS with a
verifier that points at a closed port beside it. The judge's P(Yes) scores the candidates, its
tokens are in usage and in `ponder.usage.verifier`; the dead one's failures are per candidate
and said; a name the server does not configure is a 400, and a request can never give a URL."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..conftest import Server, free_port, start_server, stop_server

Q = [{"role": "user", "content": "Tom has 3 apples and buys 5 more. How many apples now?"}]
N = 3


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("judge"), {"PONDER_MODEL_NAME": "judge-model"})
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory, judge: Server) -> Iterator[Server]:
    verifiers = {
        "judge": {"kind": "judge", "url": judge.base_url, "model": "judge-model"},
        "dead": {
            "kind": "judge",
            "url": f"http://127.0.0.1:{free_port()}",
            "model": "x",
            "timeout_s": 5,
            "retries": 1,
        },
    }
    srv = start_server(
        tmp_path_factory.mktemp("with-judge"), {"PONDER_VERIFIERS": json.dumps(verifiers)}
    )
    yield srv
    stop_server(srv)


def ask(server: Server, verify: dict[str, Any]) -> httpx.Response:
    body = {
        "model": "smollm2",
        "messages": Q,
        "max_tokens": 32,
        "seed": 5,
        "ponder": {
            "strategy": "verify",
            "samples": N,
            "include_candidates": True,
            "answer": {"format": "number"},
            "verify": verify,
        },
    }
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=600)


def test_an_external_judge_scores_each_candidate(main: Server, judge: Server) -> None:
    r = ask(main, {"verifier": "judge"})
    assert r.status_code == 200, r.text
    body = r.json()
    meta = body["ponder"]
    used = meta["usage"]["verifier"]
    assert used["name"] == "judge" and used["calls"] == N and "failed" not in used
    assert used["completion_tokens"] == N  # one verdict token each
    assert "followup" not in meta["usage"]
    scores = [c["verification"] for c in meta["candidates"]]
    assert all(s is None or 0.0 <= s <= 1.0 for s in scores) and any(s is not None for s in scores)
    cand_tokens = sum(c["tokens"] for c in meta["candidates"])
    assert body["usage"]["completion_tokens"] == cand_tokens + used["completion_tokens"]
    assert body["usage"]["prompt_tokens"] > used["prompt_tokens"] > 0
    # the judge's score is what the judge server says P(Yes) is for that prompt
    first = meta["candidates"][0]
    from ponder.strategies import prompts

    said = prompts.fill(prompts.VERIFY, question=Q[0]["content"], response=first["text"])
    direct = httpx.post(
        f"{judge.base_url}/v1/chat/completions",
        json={"model": "judge-model", "messages": [{"role": "user", "content": said}],
              "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 20},
        timeout=120,
    ).json()  # fmt: skip
    top = direct["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    yes = sum(math.exp(t["logprob"]) for t in top if t["token"].strip().lower() == "yes")
    no = sum(math.exp(t["logprob"]) for t in top if t["token"].strip().lower() == "no")
    if yes + no > 0:  # greedy on the same server and prompt: the same distribution
        assert first["verification"] == pytest.approx(yes / (yes + no), abs=1e-4)


def test_a_failing_verifier_fails_per_candidate_and_says_so(main: Server) -> None:
    r = ask(main, {"verifier": "dead"})
    assert r.status_code == 200, r.text
    meta = r.json()["ponder"]
    failed = meta["usage"]["verifier"]["failed"]
    assert len(failed) == N and all("after 2" in f for f in failed)  # one retry each
    assert all(c["verification"] is None for c in meta["candidates"])
    assert meta["notes"]["verify"]["unscored"] == N


@pytest.mark.parametrize(
    ("verify", "param"),
    [
        ({"verifier": "nope"}, "ponder.verify.verifier"),
        ({"verifier": "http://evil.example/v1"}, "ponder.verify.verifier"),
        ({"verifier": "judge", "verifications": 2}, "ponder.verify.verifications"),
        ({"url": "http://evil.example"}, "ponder.verify.url"),
    ],
)
def test_only_configured_verifiers_by_name(main: Server, verify: dict, param: str) -> None:
    r = ask(main, verify)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_an_external_judge_scores_a_search_step_by_step(main: Server) -> None:
    """Issue 28 item 4: the same judge as a process verifier of `beam`: every partial
    solution is scored by one call to it, counted in usage."""
    body = {
        "model": "smollm2",
        "messages": Q,
        "max_tokens": 48,
        "seed": 5,
        "ponder": {
            "strategy": "beam",
            "samples": 4,
            "include_candidates": True,
            "beam": {"scorer": "verify", "verifier": "judge", "delimiter": "\n", "max_steps": 3},
        },
    }
    r = httpx.post(f"{main.base_url}/v1/chat/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text
    out = r.json()
    meta = out["ponder"]
    made = [n for step in meta["notes"]["search"]["tree"] for n in step["nodes"]]
    used = meta["usage"]["verifier"]
    assert used["name"] == "judge" and used["calls"] == len(made) and "failed" not in used
    assert "followup" not in meta["usage"]
    assert all(n["score"] is None or 0.0 <= n["score"] <= 1.0 for n in made)
    assert any(n["score"] is not None for n in made)
    steps = sum(n["tokens"] for n in made)
    assert out["usage"]["completion_tokens"] == steps + used["completion_tokens"]
