"""Unanswered samples weigh in every strategy's confidence: one answer among eight samples is
not a sure answer, whichever strategy reports it (issue: RPC and self-certainty used to say 1.0
where majority vote said 0.125)."""

from __future__ import annotations

import math

import pytest

from ponder.answers import AnswerSpec
from ponder.strategies import REGISTRY, SelectOptions
from ponder.strategies.cntp import single_decision

from .factories import make_sample

OPTS = SelectOptions(answer=AnswerSpec("number"))


def one_answer_of_eight(best_lp: bool):  # type: ignore[no-untyped-def]
    """Sample 0 says 42; seven say nothing numeric. Its logprob and self-certainty are the
    best (`best_lp`) or the worst of the eight."""
    lp0 = -0.1 if best_lp else -3.0
    out = [make_sample(0, "It is 42.", [lp0] * 4, [5.0 if best_lp else 0.1] * 4)]
    words = ["alas", "sorry", "hmm", "unsure", "pass", "dunno", "maybe"]
    out += [
        make_sample(i, f"I cannot say, {w}.", [-1.0] * 4, [1.0] * 4) for i, w in enumerate(words, 1)
    ]
    return out


@pytest.mark.parametrize("name", ["majority_vote", "self_certainty", "rpc"])
@pytest.mark.parametrize("best_lp", [True, False])
def test_one_answered_sample_of_eight_is_not_certain(name: str, best_lp: bool) -> None:
    d = REGISTRY[name].decide(one_answer_of_eight(best_lp), OPTS)
    assert d is not None and d.answer == "42" and d.unanswered == 7
    assert d.confidence < 0.5
    assert sum(t.share for t in d.tally) < 1.0  # the rest of the weight is the unanswered


def test_the_figures_by_hand() -> None:
    samples = one_answer_of_eight(best_lp=True)
    mv = REGISTRY["majority_vote"].decide(samples, OPTS)
    assert mv is not None and mv.confidence == pytest.approx(1 / 8)
    sc = REGISTRY["self_certainty"].decide(samples, OPTS)
    ranks = sum(math.sqrt(k) for k in range(1, 9))  # every rank's Borda points, p = 0.5
    assert sc is not None and sc.confidence == pytest.approx(math.sqrt(8) / ranks)
    rpc = REGISTRY["rpc"].decide(samples, OPTS)
    p0, p_rest = math.exp(-0.1), math.exp(-1.0)
    assert rpc is not None and rpc.confidence == pytest.approx(p0 / (p0 + 7 * p_rest))
    # as in PC, identical texts count once
    same = samples[:1] + [make_sample(i, "I cannot say.", [-1.0] * 4) for i in range(1, 8)]
    rpc_same = REGISTRY["rpc"].decide(same, OPTS)
    assert rpc_same is not None and rpc_same.confidence == pytest.approx(p0 / (p0 + p_rest))


def test_all_answered_is_unchanged() -> None:
    samples = [make_sample(i, f"It is {4 + (i % 2)}.", [-1.0] * 3) for i in range(6)]
    for name in ("majority_vote", "self_certainty", "rpc"):
        d = REGISTRY[name].decide(samples, OPTS)
        assert d is not None and sum(t.share for t in d.tally) == pytest.approx(1.0)


def test_a_single_decode_without_an_answer_has_no_confidence() -> None:
    sample = make_sample(0, "I cannot say.", [-0.1] * 4)
    d = single_decision(sample, AnswerSpec("number"))
    assert d.answer is None and d.confidence == 0.0
    answered = single_decision(make_sample(0, "It is 42.", [-0.1] * 4), AnswerSpec("number"))
    assert answered.confidence == pytest.approx(math.exp(-0.1))


@pytest.mark.parametrize("name", ["majority_vote", "self_certainty", "rpc"])
def test_one_sample_reports_its_own_probability_not_one(name: str) -> None:
    """N = 1 (or temperature 0): no vote to count, so the confidence is exp(mean logprob)."""
    answered = REGISTRY[name].decide([make_sample(0, "It is 42.", [-0.5] * 4)], OPTS)
    assert answered is not None and answered.confidence == pytest.approx(math.exp(-0.5))
    silent = REGISTRY[name].decide([make_sample(0, "No idea.", [-0.5] * 4)], OPTS)
    assert silent is not None and silent.confidence == 0.0
