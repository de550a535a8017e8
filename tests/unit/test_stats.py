"""Per-token stats and the sampling filters (engines/stats.py) against direct formulas."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from ponder.engines.stats import processed_distribution, raw_stats, sample_rows, top_logprobs
from ponder.types import SamplingParams


def rows(m: int = 3, v: int = 1000, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(m, v)) * 3).astype(np.float32)


def test_raw_stats_match_definitions() -> None:
    z = rows()
    lse, kl = raw_stats(z)
    z64 = z.astype(np.float64)
    np.testing.assert_allclose(lse, logsumexp(z64, axis=1), rtol=1e-5)
    p = softmax(z64, axis=1)
    kl_direct = (np.log(1 / z.shape[1]) - np.log(p)).mean(axis=1)  # KL(U || p)
    np.testing.assert_allclose(kl, kl_direct, rtol=1e-4)
    assert (kl >= 0).all()


def test_uniform_logits_have_zero_kl() -> None:
    _, kl = raw_stats(np.zeros((1, 50), dtype=np.float32))
    assert abs(float(kl[0])) < 1e-5


def test_processed_distribution_filters() -> None:
    z = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    ids, q = processed_distribution(z, SamplingParams(temperature=1.0, top_p=0.7))
    assert sorted(ids.tolist()) == [0, 1]
    np.testing.assert_allclose(q, [0.5 / 0.8, 0.3 / 0.8], rtol=1e-6)
    ids, q = processed_distribution(z, SamplingParams(temperature=1.0, top_k=3))
    assert sorted(ids.tolist()) == [0, 1, 2]
    ids, _ = processed_distribution(z, SamplingParams(temperature=1.0, min_p=0.5))
    assert sorted(ids.tolist()) == [0, 1]
    ids, q = processed_distribution(z, SamplingParams(temperature=0.0))
    assert ids.tolist() == [0] and q.tolist() == [1.0]
    ids, q = processed_distribution(z, SamplingParams(temperature=0.5))
    expected = softmax(z.astype(np.float64) / 0.5)
    np.testing.assert_allclose(q, expected[ids], rtol=1e-6)


def test_nucleus_grows_past_its_first_guess() -> None:
    z = np.zeros(5000, dtype=np.float32)  # flat: top_p 0.9 needs 4500 tokens
    ids, _ = processed_distribution(z, SamplingParams(temperature=1.0, top_p=0.9))
    assert abs(ids.size - 4500) <= 1  # float rounding of the cumulative sum


def test_sample_rows_stats_and_reproducibility() -> None:
    z = rows(m=4, v=500)
    params = SamplingParams(temperature=0.8, top_p=0.95)
    a = sample_rows(z, params, [np.random.default_rng(7 + i) for i in range(4)])
    b = sample_rows(z, params, [np.random.default_rng(7 + i) for i in range(4)])
    assert a.token.tolist() == b.token.tolist()
    for r in range(4):
        t = int(a.token[r])
        assert a.logprob[r] == pytest.approx(
            float(z[r, t] - logsumexp(z[r].astype(np.float64))), abs=1e-4
        )
        ids, q = processed_distribution(z[r], params)
        j = int(np.nonzero(ids == t)[0][0])
        assert a.logprob_processed[r] == pytest.approx(np.log(q[j]), abs=1e-5)
        assert a.entropy_processed[r] == pytest.approx(-(q * np.log(q)).sum(), abs=1e-4)
    assert (a.logprob <= 0).all() and (a.entropy_processed >= 0).all()


def test_sampling_follows_the_distribution() -> None:
    z = np.log(np.array([[0.7, 0.2, 0.1]], dtype=np.float32))
    rng = np.random.default_rng(1)
    counts = np.zeros(3)
    for _ in range(4000):
        counts[int(sample_rows(z, SamplingParams(temperature=1.0), [rng]).token[0])] += 1
    np.testing.assert_allclose(counts / 4000, [0.7, 0.2, 0.1], atol=0.03)


def test_top_logprobs_sorted() -> None:
    z = rows(m=1, v=100)[0]
    lse = float(logsumexp(z.astype(np.float64)))
    top = top_logprobs(z, lse, 5)
    assert [t for t, _ in top] == np.argsort(-z)[:5].tolist()
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(top))


def test_block_sampling_across_blocks_follows_the_distribution() -> None:
    z = np.full((1, 1000), -40.0, dtype=np.float32)
    z[0, [10, 300, 999]] = np.log([0.5, 0.3, 0.2])
    rng = np.random.default_rng(3)
    got = [
        int(sample_rows(z, SamplingParams(temperature=1.0), [rng]).token[0]) for _ in range(3000)
    ]
    freq = [got.count(i) / 3000 for i in (10, 300, 999)]
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.03)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.8),
        SamplingParams(temperature=0.8, top_k=3, top_p=0.9),
    ],
)
def test_banned_tokens_leave_the_processed_distribution_only(params: SamplingParams) -> None:
    """`min_tokens`: the end-of-generation token (here the most likely one) is masked in the
    rows asked, never sampled there; the raw stats are the model's own, masked or not."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 10)).astype(np.float32)
    logits[:, 3] = 8.0  # token 3 would win almost always
    asked = np.array([True, True, False, False])
    rngs = [np.random.default_rng(k) for k in range(4)]
    masked = sample_rows(logits, params, rngs, (asked, np.array([3])))
    assert (masked.token[:2] != 3).all() and (masked.token[2:] == 3).all()
    assert (
        np.isfinite(masked.entropy_processed).all() and np.isfinite(masked.logprob_processed).all()
    )
    plain = sample_rows(logits, params, [np.random.default_rng(k) for k in range(4)])
    np.testing.assert_array_equal(masked.lse, plain.lse)
    np.testing.assert_array_equal(masked.kl_uniform, plain.kl_uniform)
    lse = np.log(np.exp(logits.astype(np.float64)).sum(axis=1))
    want = logits[np.arange(4), masked.token] - lse
    np.testing.assert_allclose(masked.logprob, want, atol=1e-5)  # raw, not renormalised
