"""CNTP's pure parts (docs/strategies.md section 5): the trial-count formula, threshold, pick."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ponder.strategies import CntpOptions
from ponder.strategies.cntp import branch_threshold, perplexity, pick_trial, trial_count

DEFAULTS = CntpOptions()


@pytest.mark.parametrize(
    ("entropy", "trials"),
    [(0.0, 1), (0.01, 1), (0.10, 1), (0.18, 2), (0.50, 3), (1.00, 6), (1.5, 10), (4.0, 10)],
)
def test_trial_count_table(entropy: float, trials: int) -> None:
    assert trial_count(entropy, DEFAULTS) == trials


def test_threshold_is_where_branching_starts() -> None:
    h = branch_threshold(DEFAULTS)
    assert trial_count(h, DEFAULTS) == 2
    assert trial_count(math.nextafter(h, 0.0), DEFAULTS) == 1
    assert h == pytest.approx(0.01 + 1.49 / 9)
    assert branch_threshold(CntpOptions(max_trials=1)) == math.inf


@given(
    st.floats(-1.0, 5.0),
    st.integers(1, 64),
    st.floats(-1.0, 1.0),
    st.floats(0.01, 3.0),
)
def test_threshold_agrees_with_the_formula(h: float, m: int, low: float, span: float) -> None:
    opts = CntpOptions(max_trials=m, entropy_low=low, entropy_high=low + span)
    assert 1 <= trial_count(h, opts) <= m
    assert (trial_count(h, opts) > 1) == (h >= branch_threshold(opts))


def test_perplexity_and_pick() -> None:
    assert perplexity(np.array([-1.0, -1.0], dtype=np.float32)) == pytest.approx(math.e)
    assert perplexity(np.zeros(0, dtype=np.float32)) == math.inf
    assert pick_trial([2.0, 1.5, 1.5, 3.0]) == 1
