"""DeepConf through the real server and the openai SDK: offline weighting recomputable from the
candidates, online traces stopped by the engine (their tokens never generated), and clear
400s for contradictory settings."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from ..conftest import Server

Q = [{"role": "user", "content": "What is 12 + 7? Answer with the number."}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, deepconf: dict | None, samples: int = 12, **kw: object) -> dict:
    ponder: dict = {
        "strategy": "deepconf",
        "samples": samples,
        "answer": {"format": "number"},
        "include_candidates": True,
    }
    if deepconf is not None:
        ponder["deepconf"] = deepconf
    r = client.chat.completions.create(
        model="smollm2", messages=Q, max_tokens=48, seed=1, extra_body={"ponder": ponder}, **kw
    )
    return {"ponder": r.model_extra["ponder"], "usage": r.usage, "choice": r.choices[0]}


def test_offline_votes_by_confidence_recomputable_from_the_candidates(
    client: openai.OpenAI,
) -> None:
    r = ask(client, {"window": 8, "keep": 0.5})
    p = r["ponder"]
    cands = p["candidates"]
    assert p["strategy"] == "deepconf" and p["generated"] == 12 and p["exact"]
    for c in cands:
        conf = np.asarray(c["token_confidence"])
        assert conf.shape == (c["tokens"],) and (conf > 0).all()
        means = np.convolve(conf, np.ones(8) / 8, mode="valid") if conf.size >= 8 else [conf.mean()]
        assert c["trace_confidence"] == pytest.approx(min(means), abs=1e-3)
    confs = [c["trace_confidence"] for c in cands]
    bar = float(np.percentile(confs, 50))
    assert p["notes"]["deepconf"]["threshold"] == pytest.approx(bar, abs=1e-3)
    assert [c["pruned"] for c in cands] == [x < bar for x in confs]
    weights: dict[str, float] = {}
    for c in cands:
        if not c["pruned"] and c["answer"] is not None:
            weights[c["answer"]] = weights.get(c["answer"], 0.0) + c["trace_confidence"]
    assert p["answer"] == max(weights, key=weights.__getitem__)
    winner = sum(x for x, c in zip(confs, cands, strict=True) if c["answer"] == p["answer"])
    assert p["confidence"] == pytest.approx(winner / sum(confs), abs=1e-6)
    assert r["choice"].message.content == cands[p["chosen"]]["text"]


def test_online_stops_low_confidence_traces_in_the_engine(client: openai.OpenAI) -> None:
    offline = ask(client, {"window": 4})["ponder"]
    r = ask(client, {"mode": "online", "window": 4, "warmup": 4, "keep": 0.9})
    p = r["ponder"]
    cands = p["candidates"]
    note = p["notes"]["deepconf"]
    # the warm-up traces are the offline run's first four (seeds seed + i), and set the bar
    assert [c["text"] for c in cands[:4]] == [c["text"] for c in offline["candidates"][:4]]
    warm = [c["trace_confidence"] for c in cands[:4]]
    assert note["threshold"] == pytest.approx(float(np.percentile(warm, 10)), abs=1e-3)
    stopped = [c for c in cands if c["finish_reason"] == "confidence"]
    assert stopped and note["stopped"] == len(stopped)
    for c in stopped:
        assert c["index"] >= 4 and c["pruned"] and c["answer"] is None
        conf = np.asarray(c["token_confidence"])
        # it ended on the first 4-token window below the bar: earlier windows were not
        assert conf[-4:].mean() < note["threshold"]
        if conf.size > 4:  # every earlier full window was at or above the bar
            earlier = np.convolve(conf[:-1], np.ones(4) / 4, mode="valid")
            assert (earlier >= note["threshold"] - 1e-4).all()
    # what was stopped was never generated: usage counts the cut traces only
    assert r["usage"].completion_tokens == sum(c["tokens"] for c in cands)
    assert r["usage"].completion_tokens < sum(c["tokens"] for c in offline["candidates"])


@pytest.mark.parametrize(
    ("ponder", "param"),
    [
        ({"strategy": "majority_vote", "deepconf": {"keep": 0.5}}, "ponder.deepconf"),
        (
            {"strategy": "deepconf", "samples": 8, "deepconf": {"mode": "online"}},
            "ponder.deepconf.warmup",
        ),
        (
            {
                "strategy": "deepconf",
                "samples": 8,
                "deepconf": {"mode": "online", "warmup": 2},
                "adaptive": {"method": "beta"},
            },
            "ponder.adaptive",
        ),
        ({"strategy": "deepconf", "deepconf": {"top_k": 21}}, "ponder.deepconf.top_k"),
        ({"strategy": "deepconf", "deepconf": {"warmup": 4}}, "ponder.deepconf"),
    ],
)
def test_contradictory_settings_are_clear_400s(
    client: openai.OpenAI, ponder: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2", messages=Q, max_tokens=4, extra_body={"ponder": ponder}
        )
    assert err.value.body["param"] == param
    assert client.models.list().data  # and the server is fine
