"""DeepConf's maths (docs/strategies.md section 6): token and trace confidence, the stop rule,
the filtered weighted vote, the online replay, and the checks on its settings."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from ponder.answers import AnswerSpec
from ponder.api.errors import to_api_error
from ponder.api.plan import check_request
from ponder.api.schemas import ChatCompletionRequest
from ponder.config import Settings
from ponder.engines import chunked
from ponder.engines.base import confidence_from_top
from ponder.engines.stats import raw_stats, token_confidence
from ponder.errors import InvalidRequest, UnsupportedRequest
from ponder.strategies import REGISTRY, AdaptiveOptions, DeepConfOptions, SelectOptions
from ponder.strategies.deepconf import bar, select, simulate_online, trace_confidence
from ponder.types import Generation, Sample, SamplingParams, confidence_stop

from .factories import make_sample

pytestmark = pytest.mark.unit


def traced(index: int, text: str, conf: list[float], finish: str = "stop") -> Sample:
    s = make_sample(index, text, [-0.5] * len(conf))
    return dataclasses.replace(
        s,
        confidence=np.asarray(conf, dtype=np.float32),
        finish_reason=finish,
        tokens_text=[f"<{i}>" for i in range(len(conf))],
    )


def test_token_confidence_is_minus_the_mean_of_the_top_k_logprobs() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 500)).astype(np.float32) * 3
    lse, _ = raw_stats(logits)
    got = token_confidence(logits, lse, 20)
    for r in range(3):
        logp = logits[r].astype(np.float64) - np.log(np.exp(logits[r].astype(np.float64)).sum())
        want = -np.sort(logp)[-20:].mean()
        assert got[r] == pytest.approx(want, abs=1e-4)
    # a peaked row is confident (large C), a flat one is not
    peaked = np.full((1, 100), -10.0, np.float32)
    peaked[0, 7] = 10.0
    flat = np.zeros((1, 100), np.float32)
    c_peak = token_confidence(peaked, raw_stats(peaked)[0], 20)[0]
    c_flat = token_confidence(flat, raw_stats(flat)[0], 20)[0]
    assert c_peak > 15 > c_flat == pytest.approx(np.log(100), abs=1e-5)


def test_confidence_from_top_uses_only_the_k_best() -> None:
    # vLLM adds the sampled token when it is outside the top k: it must not count
    pos = [{1: -0.1, 2: -1.0, 3: -2.0, 99: -9.0}]
    conf, full = confidence_from_top(pos, 3)
    assert conf[0] == pytest.approx((0.1 + 1.0 + 2.0) / 3) and full
    conf, full = confidence_from_top(pos, 5)
    assert not full  # fewer than k logprobs at a position


def test_trace_confidence_is_the_lowest_window_mean() -> None:
    c = [5.0, 5.0, 1.0, 2.0, 6.0, 6.0]
    assert trace_confidence(c, 2) == pytest.approx(1.5)  # (1 + 2) / 2
    assert trace_confidence(c, 3) == pytest.approx(8 / 3)  # (5 + 1 + 2) / 3 < (1+2+6)/3
    assert trace_confidence(c, 6) == pytest.approx(25 / 6)
    assert trace_confidence(c, 100) == pytest.approx(25 / 6)  # shorter than a window: mean
    assert trace_confidence([], 4) == 0.0


def test_the_stop_rule_keeps_up_to_the_first_failing_window() -> None:
    c = [5.0, 5.0, 1.0, 2.0, 6.0, 6.0]
    assert confidence_stop(c, 2, 2.0) == 4  # windows: 5, 3, 1.5 (ends at token 4)
    assert confidence_stop(c, 2, 1.0) is None
    assert confidence_stop(c, 7, 100.0) is None  # never a full window
    assert confidence_stop(c, 1, 1.5) == 3


def test_bar_is_the_one_minus_keep_quantile() -> None:
    confs = [float(x) for x in range(1, 11)]
    assert bar(confs, 0.9) == pytest.approx(1.9)
    assert bar(confs, 0.1) == pytest.approx(9.1)
    assert bar(confs, 1.0) == pytest.approx(1.0)


def opts(**kw: object) -> SelectOptions:
    deepconf = DeepConfOptions(**kw)  # type: ignore[arg-type]
    return SelectOptions(answer=AnswerSpec("number"), own=deepconf)


def test_offline_vote_filters_then_weighs_by_confidence() -> None:
    # three low-confidence traces say 7, two confident ones say 9
    samples = [
        traced(0, "The answer is 7", [2.0, 2.0]),
        traced(1, "The answer is 7", [2.1, 2.1]),
        traced(2, "The answer is 7", [2.2, 2.2]),
        traced(3, "The answer is 9", [9.0, 9.0]),
        traced(4, "The answer is 9", [8.0, 8.0]),
    ]
    d = select(samples, opts(keep=0.4))  # bar = 60th percentile = 2.2 + 0.4 * (8 - 2.2)
    assert d.notes["deepconf"]["threshold"] == pytest.approx(2.2 + 0.4 * 5.8)
    assert d.answer == "9" and d.pruned == [True, True, True, False, False]
    assert d.chosen == 3  # the winner's most confident member
    total = 2.0 + 2.1 + 2.2 + 9.0 + 8.0
    assert d.confidence == pytest.approx(17.0 / total)
    assert [(t.answer, t.votes, t.score) for t in d.tally] == [("9", 2, pytest.approx(17.0))]
    # keep everything: a weighted vote, where 7's three traces weigh 6.3 < 17
    d = select(samples, opts(keep=1.0))
    assert d.answer == "9" and not any(d.pruned) and len(d.tally) == 2
    assert d.tally[1].answer == "7" and d.tally[1].score == pytest.approx(6.3)
    # majority vote would pick 7: the weighting is what changed the answer
    assert REGISTRY["majority_vote"].decide(samples, SelectOptions()).answer == "7"


def test_unanswered_and_filtered_traces_weigh_in_the_confidence() -> None:
    samples = [
        traced(0, "The answer is 4", [9.0]),
        traced(1, "no idea", [9.0]),
        traced(2, "The answer is 5", [1.0]),
    ]
    d = select(samples, opts(keep=0.5))
    assert d.answer == "4" and d.unanswered == 1
    assert d.confidence == pytest.approx(9.0 / 19.0)  # not 1.0 although one trace voted
    none = select([traced(0, "no idea", [3.0]), traced(1, "nothing", [2.0])], opts())
    assert none.answer is None and none.confidence == 0.0 and none.chosen == 0


def test_online_vote_drops_stopped_and_below_bar_traces() -> None:
    o = opts(mode="online", warmup=3, keep=0.5, window=2)
    samples = [
        traced(0, "The answer is 3", [4.0, 4.0]),
        traced(1, "The answer is 8", [1.0, 1.0]),  # warm-up, below the bar (median 4)
        traced(2, "The answer is 3", [6.0, 6.0]),
        traced(3, "The answer is 8", [2.0, 2.0], finish="confidence"),
        traced(4, "The answer is 8", [5.0, 5.0]),
    ]
    d = select(samples, o)
    assert d.notes["deepconf"]["threshold"] == pytest.approx(4.0)
    assert d.pruned == [False, True, False, True, False]
    assert d.answers[3] is None  # a stopped trace has no answer, whatever its text says
    assert d.answer == "3" and d.tally[0].score == pytest.approx(10.0)
    assert d.confidence == pytest.approx(10.0 / 18.0)
    assert d.notes["deepconf"]["stopped"] == 1


def test_simulate_online_cuts_where_the_engine_would_stop() -> None:
    o = DeepConfOptions(mode="online", warmup=2, keep=1.0, window=2)  # bar = min warm-up
    samples = [
        traced(0, "a", [3.0, 3.0, 3.0]),
        traced(1, "b", [4.0, 4.0]),
        traced(2, "c", [5.0, 2.0, 2.0, 5.0]),  # window (2, 2) < 3: cut after token 3
        traced(3, "d", [5.0, 5.0, 1.0, 1.0]),  # fails on its last token: it had ended
        traced(4, "e", [1.0]),  # never a full window
    ]
    out = simulate_online(samples, o)
    assert [s.finish_reason for s in out] == ["stop", "stop", "confidence", "stop", "stop"]
    assert out[2].n_tokens == 3 and out[2].text == "<0><1><2>"
    assert out[2].confidence.tolist() == [5.0, 2.0, 2.0] and out[3] is samples[3]
    assert out[2].logprob.size == 3


def test_the_strategy_checks_its_settings() -> None:
    s = REGISTRY["deepconf"]
    s.check(opts(mode="online", warmup=4), 8)
    with pytest.raises(InvalidRequest) as e:
        s.check(opts(mode="online", warmup=8), 8)
    assert e.value.param == "ponder.deepconf.warmup"
    s.check(opts(mode="online", warmup=8), 1)  # temperature 0: one greedy trace
    online_adaptive = dataclasses.replace(opts(mode="online", warmup=2), adaptive=AdaptiveOptions())
    with pytest.raises(UnsupportedRequest):
        s.check(online_adaptive, 8)
    s.check(dataclasses.replace(opts(), adaptive=AdaptiveOptions()), 8)


def request(ponder: dict) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "ponder": ponder}
    )


def test_options_of_another_strategy_are_refused_not_ignored() -> None:
    settings = Settings()
    for ponder, param in (
        ({"strategy": "majority_vote", "deepconf": {"keep": 0.5}}, "ponder.deepconf"),
        ({"strategy": "deepconf", "rpc": {"prune": False}}, "ponder.rpc"),
        ({"strategy": "majority_vote", "cntp": {"max_trials": 2}}, "ponder.cntp"),
        (
            {"strategy": "deepconf", "samples": 8, "deepconf": {"mode": "online"}},
            "ponder.deepconf.warmup",
        ),
    ):
        with pytest.raises(Exception) as e:  # mapped below as the server maps it
            check_request(request(ponder), settings, "smollm2")
        err = to_api_error(e.value)
        assert err.status == 400 and err.param == param, ponder
    ok = {"strategy": "deepconf", "samples": 8, "deepconf": {"mode": "online", "warmup": 2}}
    assert check_request(request(ok), settings, "smollm2").options.of(DeepConfOptions).warmup == 2
    with pytest.raises(ValueError, match="warmup"):
        request({"strategy": "deepconf", "deepconf": {"warmup": 2}})  # offline has no warm-up


def test_chunked_engines_apply_the_rule_across_chunks() -> None:
    """vLLM and the upstream cut client-side: a window that straddles two chunks stops the
    trace where llama.cpp would, and the tokens drawn past it count as unused."""
    conf = [5.0] * 14 + [1.0, 1.0, 1.0, 5.0] + [5.0] * 20  # a low window across chunks 1-2

    async def sample_one(prefix: list[int], p: SamplingParams) -> Generation:
        start = len(prefix) - 3
        n = min(p.max_tokens, len(conf) - start)
        s = traced(0, "", conf[start : start + n], finish="length")
        s = dataclasses.replace(s, token_ids=list(range(start, start + n)))
        return Generation([s], 3, 0.0, 0.0)

    params = SamplingParams(max_tokens=30, confidence_top_k=20, stop_confidence=(3, 2.0))
    gen = asyncio.run(chunked.generate(sample_one, lambda ids: "", [0, 0, 0], params, 2))
    for s in gen.samples:
        # windows of 3 end at token 15 (mean 7/3), then 16 (tokens 14-16: 1.0 < 2)
        assert s.finish_reason == "confidence" and s.n_tokens == 17
        assert s.token_ids == list(range(17)) and s.confidence.size == 17
    assert gen.unused_tokens == 2 * (30 - 17)  # chunks of 16 and 14 (the budget) drawn
