"""Self-certainty with Borda voting and best-of-N (docs/strategies.md section 3), hand-computed."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ponder.answers import AnswerSpec
from ponder.strategies import SelectOptions, SelfCertaintyOptions, majority_vote, self_certainty

from .factories import make_sample


def samples(texts: list[str], sc: list[float]):
    return [
        make_sample(i, t, [-1.0, -1.0], [s, s])
        for i, (t, s) in enumerate(zip(texts, sc, strict=True))
    ]


def opts(p: float = 0.5, vote: bool = True) -> SelectOptions:
    return SelectOptions(
        answer=AnswerSpec("choice"), own=SelfCertaintyOptions(vote=vote, borda_p=p)
    )


def test_borda_points_by_hand() -> None:
    # SC ranks: s1 (3.0) r1, s2 (2.0) r2, s0 (1.0) r3, s3 (0.5, unparsable) r4
    d = self_certainty.select(samples(["A", "B", "A", "none"], [1.0, 3.0, 2.0, 0.5]), opts())
    points = d.scores["borda_points"]
    assert points == pytest.approx([math.sqrt(2), 2.0, math.sqrt(3), 0.0])
    assert d.answer == "A" and d.chosen == 2  # A's member with the highest SC
    a, b = math.sqrt(2) + math.sqrt(3), 2.0
    # the unparsable sample weighs in with the points its rank would earn (1^0.5 = 1)
    assert d.confidence == pytest.approx(a / (a + b + 1.0))
    assert d.tally[0].share == pytest.approx(d.confidence)
    assert [(t.answer, t.votes) for t in d.tally] == [("A", 2), ("B", 1)]
    assert d.tally[0].score == pytest.approx(a) and d.tally[1].score == pytest.approx(b)
    assert d.unanswered == 1


def test_borda_can_overrule_the_majority() -> None:
    d = self_certainty.select(samples(["A", "A", "A", "B", "B"], [1, 2, 3, 10, 9]), opts(p=1.0))
    assert d.scores["borda_points"] == [1.0, 2.0, 3.0, 5.0, 4.0]
    assert d.answer == "B" and d.chosen == 3
    assert d.confidence == pytest.approx(9 / 15)


def test_equal_self_certainty_ranks_by_index() -> None:
    d = self_certainty.select(samples(["A", "B"], [1.0, 1.0]), opts(p=1.0))
    assert d.scores["borda_points"] == [2.0, 1.0]
    assert d.answer == "A"


def test_p_zero_is_majority_vote() -> None:
    d = self_certainty.select(samples(["B", "A", "A", "x"], [9, 1, 2, 5]), opts(p=0.0))
    assert d.answer == "A" and d.tally[0].score == 2.0 and d.tally[1].score == 1.0
    assert d.confidence == pytest.approx(2 / 4)  # majority vote's: votes / samples drawn


def test_best_of_n_mode() -> None:
    d = self_certainty.select(samples(["A", "none", "B"], [1, 5, 3]), opts(vote=False))
    assert d.chosen == 2 and d.answer == "B"  # the unparsable sample 1 cannot win
    d = self_certainty.select(samples(["A", "B"], [2, 2]), opts(vote=False))
    assert d.chosen == 0  # tie -> lowest index
    d = self_certainty.select(samples(["x", "y", "z"], [1, 4, 2]), opts(vote=False))
    assert d.chosen == 1 and d.answer is None and d.confidence == 0.0  # no answer: max SC overall


def test_best_of_n_reports_the_chosen_answer_first() -> None:
    d = self_certainty.select(samples(["A", "A", "A", "B"], [1, 2, 3, 10]), opts(vote=False))
    assert d.chosen == 3 and d.answer == "B"
    assert d.tally[0].answer == "B" and d.ranking[0] == 3
    assert d.confidence == pytest.approx(d.tally[0].share)


@given(
    st.lists(
        st.tuples(st.sampled_from(["A", "B", "C", "-"]), st.floats(0, 20)), min_size=1, max_size=20
    )
)
def test_p_zero_equals_majority_vote_property(rows: list[tuple[str, float]]) -> None:
    ss = samples([t for t, _ in rows], [s for _, s in rows])
    sc = self_certainty.select(ss, opts(p=0.0))
    mv = majority_vote.select(ss, SelectOptions(answer=AnswerSpec("choice")))
    assert sc.answer == mv.answer
    assert [(t.answer, t.votes, t.score) for t in sc.tally] == [
        (t.answer, t.votes, t.score) for t in mv.tally
    ]
