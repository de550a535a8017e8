"""Issue 28 through the real server and SmolLM2: step-level search (`beam`, `particles`) with
each scorer, its tree with include_candidates, usage that counts every step and every
verdict, progress per step, a one-path search streamed as segments, a seeded search that
repeats itself, and bad settings refused before any work."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import pytest

from ..conftest import Server

Q = [
    {
        "role": "user",
        "content": "Tom has 3 apples and buys 5 more. How many apples does he have? "
        "Think step by step.",
    }
]


def ask(server: Server, ponder: dict[str, Any], status: int = 200, **kw: Any) -> dict:
    body = {
        "model": "smollm2",
        "messages": Q,
        "max_tokens": 96,
        "seed": 5,
        "temperature": 0.9,
        "ponder": {"samples": 4, "include_candidates": True, **ponder},
        **kw,
    }
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=600)
    assert r.status_code == status, r.text
    return r.json()


def nodes(meta: dict) -> list[dict]:
    return [n for step in meta["notes"]["search"]["tree"] for n in step["nodes"]]


def test_beam_keeps_the_best_beams_and_returns_the_finished_ones(server: Server) -> None:
    r = ask(server, {"strategy": "beam", "beam": {"delimiter": "\n", "max_step_tokens": 32}})
    meta = r["ponder"]
    search = meta["notes"]["search"]
    assert search["beams"] == 2 and search["expand"] == 2
    tree = search["tree"]
    assert len(tree) == search["steps"] >= 1
    assert len(tree[0]["nodes"]) == 4  # the root expanded into every candidate
    for prev, step in itertools.pairwise(tree):  # each kept, unfinished beam expanded twice
        kept = [n["id"] for n in prev["nodes"] if n["kept"] and n["finish"] is None]
        assert len(kept) <= 2
        assert sorted(n["parent"] for n in step["nodes"]) == sorted(kept * 2)
    for step in tree:  # the kept live nodes are the best-scored live ones
        live = [n for n in step["nodes"] if n["finish"] is None]
        kept = [n for n in live if n["kept"]]
        if kept:
            assert min(n["score"] for n in kept) >= max(
                (n["score"] for n in live if not n["kept"]), default=-1e9
            )
        for n in step["nodes"]:  # a step stops at its delimiter or its token budget
            assert "\n" not in n["text"].strip("\n") or n["tokens"] >= 32
    total = sum(n["tokens"] for n in nodes(meta))
    assert r["usage"]["completion_tokens"] == total == search["step_tokens"]
    cands = meta["candidates"]
    chosen = meta["chosen"]
    assert r["choices"][0]["message"]["content"] == cands[chosen]["text"]
    scores = [c["score"] for c in cands]
    assert cands[chosen]["score"] == max(scores)
    assert meta["generated"] == len(cands) >= 1


def test_beam_by_alias_with_a_vote(server: Server) -> None:
    body = {
        "model": "smollm2+beam@4",
        "messages": Q,
        "max_tokens": 64,
        "seed": 2,
        "ponder": {"beam": {"select": "vote", "beams": 1, "expand": 4}},
    }
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text
    meta = r.json()["ponder"]
    assert meta["strategy"] == "beam" and meta["notes"]["search"]["beams"] == 1
    if meta["tally"]:  # a vote: the winner has the most votes
        assert meta["tally"][0]["votes"] == max(t["votes"] for t in meta["tally"])
        assert meta["confidence"] == pytest.approx(meta["tally"][0]["share"])


def test_particles_resample_and_vote_with_the_weights(server: Server) -> None:
    r = ask(server, {"strategy": "particles", "particles": {"delimiter": "\n"}})
    meta = r["ponder"]
    tree = meta["notes"]["search"]["tree"]
    for step in tree:
        weights = [n["weight"] for n in step["nodes"]]
        assert sum(weights) == pytest.approx(1.0)
        if "copies" in step["nodes"][0]:
            assert sum(n["copies"] for n in step["nodes"]) == 4  # N drawn with replacement
    cands = meta["candidates"]
    weights = [c["weight"] for c in cands]
    copies = [c["copies"] for c in cands]
    assert sum(weights) == pytest.approx(1.0) and sum(copies) == 4
    if meta["tally"]:
        assert meta["confidence"] == pytest.approx(meta["tally"][0]["share"])
        same = sum(w for c, w in zip(cands, weights, strict=False) if c["answer"] == meta["answer"])
        assert meta["confidence"] == pytest.approx(same, abs=1e-6)


def test_a_seeded_search_repeats_itself(server: Server) -> None:
    """Same seed, same search: the engine's samples and the resampling both follow the seed
    (batch shapes are the same both times, so no tolerance is needed)."""
    opts = {"strategy": "particles", "particles": {"delimiter": "\n", "max_steps": 4}}
    a, b = ask(server, opts), ask(server, opts)
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    ta, tb = a["ponder"]["notes"]["search"]["tree"], b["ponder"]["notes"]["search"]["tree"]
    assert [[(n["parent"], n["text"], n.get("copies", None)) for n in s["nodes"]] for s in ta] == [
        [(n["parent"], n["text"], n.get("copies", None)) for n in s["nodes"]] for s in tb
    ]


def test_the_verify_scorer_counts_its_verdicts(server: Server) -> None:
    r = ask(
        server,
        {
            "strategy": "particles",
            "particles": {"delimiter": "\n", "scorer": "verify", "max_steps": 3},
        },
    )
    meta = r["ponder"]
    made = list({n["id"]: n for n in nodes(meta)}.values())  # a finished particle is listed
    calls = meta["usage"]["followup"]  # again at every later step: each node once
    assert calls["calls"] == len(made) and calls["completion_tokens"] == len(made)
    for n in made:  # P(Yes), or null when the verdict was neither
        assert n["score"] is None or 0.0 <= n["score"] <= 1.0
    usage = r["usage"]
    assert usage["completion_tokens"] == sum(n["tokens"] for n in made) + len(made)
    assert usage["prompt_tokens"] > calls["prompt_tokens"] > 0


def test_the_confidence_scorer(server: Server) -> None:
    r = ask(server, {"strategy": "beam", "beam": {"scorer": "confidence", "max_steps": 2}})
    for n in nodes(r["ponder"]):
        assert n["score"] is not None and n["score"] > 0  # minus the mean of top-20 logprobs


def test_progress_counts_steps(server: Server) -> None:
    body = {
        "model": "smollm2",
        "messages": Q,
        "max_tokens": 64,
        "seed": 3,
        "stream": True,
        "ponder": {"strategy": "beam", "samples": 4, "beam": {"delimiter": "\n", "max_steps": 5}},
    }
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=600
    ) as s:
        events = [json.loads(ln[5:]) for ln in s.iter_lines() if ln.startswith("data: {")]
    progress = [e["ponder"]["progress"] for e in events if "progress" in e.get("ponder", {})]
    assert progress[0] == {"done": 0, "total": 5} and progress[-1] == {"done": 5, "total": 5}
    done = [p["done"] for p in progress]
    assert done == sorted(done)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text.strip()


def test_one_path_streams_its_steps(server: Server) -> None:
    body = {
        "model": "smollm2",
        "messages": Q,
        "max_tokens": 64,
        "seed": 4,
        "ponder": {"strategy": "particles", "samples": 1, "particles": {"delimiter": "\n"}},
    }
    whole = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=600).json()
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json={**body, "stream": True}, timeout=600
    ) as s:
        events = [json.loads(ln[5:]) for ln in s.iter_lines() if ln.startswith("data: {")]
    pieces = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    pieces = [p for p in pieces if p]
    assert "".join(pieces) == whole["choices"][0]["message"]["content"]
    assert len(pieces) >= 2  # one segment per step, not one at the end


@pytest.mark.parametrize(
    ("ponder", "param"),
    [
        ({"strategy": "beam", "beam": {"beams": 3}}, "ponder.beam.beams"),
        ({"strategy": "beam", "beam": {"beams": 2, "expand": 3}}, "ponder.beam.expand"),
        (
            {"strategy": "beam", "beam": {"verifier": "nope", "scorer": "verify"}},
            "ponder.beam.verifier",
        ),
        ({"strategy": "particles", "particles": {"verifier": "nope"}}, "ponder.particles.verifier"),
        ({"strategy": "particles", "adaptive": {"method": "beta"}}, "ponder.adaptive"),
        (
            {"strategy": "particles", "particles": {"delimiter": "x" * 17}},
            "ponder.particles.delimiter",
        ),
        (
            {"strategy": "particles", "particles": {"temperature": 0}},
            "ponder.particles.temperature",
        ),
        ({"strategy": "beam", "particles": {}}, "ponder.particles"),
    ],
)
def test_bad_settings_are_refused(server: Server, ponder: dict, param: str) -> None:
    err = ask(server, ponder, status=400)["error"]
    assert err["param"] == param, err


def test_structured_output_and_the_token_bound_are_refused(server: Server) -> None:
    err = ask(server, {"strategy": "beam"}, 400, response_format={"type": "json_object"})["error"]
    assert err["param"] == "response_format"
    huge = {"strategy": "beam", "beam": {"max_steps": 64, "max_step_tokens": 1024}}
    # 8 x 1024 alone is within the server's 65,536 tokens; 8 x 64 steps x 1024 is not
    err = ask(server, {**huge, "samples": 8}, 400, max_tokens=1024)["error"]
    assert err["code"] == "request_too_large" and err["param"] == "max_tokens"
    assert "8192 + " in err["message"]
