"""Adaptive stopping's rules against hand-computed values (docs/strategies.md section 2)."""

from __future__ import annotations

import pytest

from ponder.answers import Answer, as_answer
from ponder.strategies.adaptive import beta_settled_probability, settled
from ponder.strategies.base import AdaptiveOptions


def nums(*values: int | None) -> list[Answer | None]:
    return [None if v is None else as_answer(str(v), "number") for v in values]


@pytest.mark.parametrize(
    ("a", "b", "p"),
    [
        # 1 - I_0.5(a+1, b+1) = P(Binomial(a+b+1, 1/2) <= a)
        (3, 0, 1 - 1 / 16),  # 0.9375: three unanimous votes are not enough
        (4, 0, 1 - 1 / 32),  # 0.96875: four are
        (5, 1, 1 - 8 / 128),  # 0.9375: one dissent, five for
        (6, 1, 1 - 9 / 256),  # 0.96484: one dissent needs six
        (2, 2, 0.5),
    ],
)
def test_beta_probability_by_hand(a: int, b: int, p: float) -> None:
    assert beta_settled_probability(a, b) == pytest.approx(p)


def test_beta_rule() -> None:
    beta = AdaptiveOptions(method="beta", threshold=0.95)
    assert not settled(nums(7, 7, 7), beta)
    assert settled(nums(7, 7, 7, 7), beta)
    assert not settled(nums(7, 7, 7, 7, 7, 8), beta)
    assert settled(nums(7, 7, 7, 7, 7, 7, 8), beta)
    assert not settled(nums(None, None, None, None), beta)  # no answer settles nothing
    assert not settled(nums(7, 8, 7, 8, 7, 8, 7, 8), beta)


def test_window_rule_reads_the_last_answers_in_order() -> None:
    window = AdaptiveOptions(method="window", window=4)
    assert not settled(nums(7, 7, 7), window)
    assert settled(nums(3, 7, 7, 7, 7), window)
    assert not settled(nums(7, 7, 7, 7, 3), window)
    assert not settled(nums(7, 7, None, 7, 7)[1:], window)
    seven, also_seven = as_answer("7", "number"), as_answer("7.0", "number")
    assert settled([seven, also_seven] * 2, window)  # equivalent answers agree
    assert isinstance(seven, Answer)
