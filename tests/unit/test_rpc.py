"""RPC (docs/strategies.md section 4): Perplexity Consistency, Reasoning Pruning, Weibull fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import weibull_min

from ponder.answers import AnswerSpec
from ponder.strategies import RpcOptions, SelectOptions, rpc
from ponder.strategies.weibull import clip, fit

from .factories import make_sample

NUM = AnswerSpec("number")


def samples(texts: list[str], mean_lp: list[float]):
    return [make_sample(i, t, [m, m]) for i, (t, m) in enumerate(zip(texts, mean_lp, strict=True))]


def opts(prune: bool = True) -> SelectOptions:
    return SelectOptions(answer=NUM, own=RpcOptions(prune=prune))


def test_pc_counts_a_duplicated_text_once() -> None:
    d = rpc.select(samples(["x 5", "x 5", "y 6"], [-0.1, -0.1, -0.05]), opts(prune=False))
    assert d.answer == "6"  # 5 would win (1.81 > 0.95) if the duplicate counted twice
    s5 = next(t for t in d.tally if t.answer == "5")
    assert s5.score == pytest.approx(math.exp(-0.1)) and s5.votes == 2
    total = math.exp(-0.1) + math.exp(-0.05)
    assert d.confidence == pytest.approx(math.exp(-0.05) / total)
    assert d.notes["pruning"] == "off"


def test_returned_text_is_the_member_with_largest_p() -> None:
    d = rpc.select(samples(["a 1", "b 1", "c 2"], [-0.9, -0.2, -0.5]), opts(prune=False))
    assert d.answer == "1" and d.chosen == 1
    assert d.scores["path_probability"][1] == pytest.approx(math.exp(-0.2))


def bimodal() -> tuple[list[str], list[float]]:
    high = [-0.05, -0.07, -0.06, -0.08, -0.04, -0.09]
    low = [-2.3, -2.5, -2.2, -2.6, -2.4, -2.1]
    texts = [f"high {i} so 1" for i in range(6)] + [f"low {i} so 2" for i in range(6)]
    return texts, high + low


def test_pruned_samples_keep_their_group_but_add_nothing() -> None:
    texts, lps = bimodal()
    d = rpc.select(samples(texts, lps), opts())
    assert d.notes["pruning"] == "applied"
    assert d.pruned == [False] * 6 + [True] * 6
    low = next(t for t in d.tally if t.answer == "2")
    assert low.votes == 6 and low.score == 0.0
    assert d.answer == "1" and d.confidence == 1.0


def test_max_p_sample_is_never_pruned() -> None:
    _texts, lps = bimodal()
    flags, _ = rpc.prune([math.exp(x) for x in lps])
    assert not flags[int(np.argmax(lps))]


def test_small_n_or_equal_probabilities_prune_nothing() -> None:
    d = rpc.select(samples(["1", "2", "2"], [-3.0, -0.1, -0.1]), opts())
    assert d.pruned == [False] * 3 and d.notes["pruning"].startswith("skipped: N < 4")
    flags, _notes = rpc.prune([0.5] * 10)
    assert flags == [False] * 10
    # equal probabilities are never "below their mean" through float rounding
    for p in (0.7, 0.1, 0.3, 1 / 3):
        flags, notes = rpc.prune([p] * 64)
        assert sum(flags) == 0, (p, notes)


def test_weibull_fit_separates_modes_and_matches_scipy_densities() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(0.02, 0.1, 20), rng.uniform(0.8, 0.98, 20)])
    m = fit(x)
    assert m is not None
    post = m.posterior_high(x)
    assert (post[:20] < 0.5).all() and (post[20:] > 0.5).all()
    xs = clip(x)
    dens = m.w * weibull_min.pdf(xs, m.k1, scale=m.lam1) + (1 - m.w) * weibull_min.pdf(
        xs, m.k2, scale=m.lam2
    )
    assert m.loglik == pytest.approx(np.log(dens).sum(), rel=1e-9)
    assert 0.2 <= m.w <= 0.8 and min(m.k1, m.lam1, m.k2, m.lam2) >= 0.01
    # a maximum: the start point is no better than the fit
    from ponder.strategies.weibull import START, mixture_loglik

    assert m.loglik >= mixture_loglik(np.array(START), xs)


def test_no_answers() -> None:
    d = rpc.select(samples(["none", "zero"], [-1.0, -0.5]), opts())
    assert d.answer is None and d.chosen == 1 and d.confidence == 0.0
