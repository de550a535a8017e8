"""Majority vote (docs/strategies.md section 2) on hand-built samples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ponder.answers import AnswerSpec
from ponder.strategies import SelectOptions, group_answers
from ponder.strategies.majority_vote import select

from .factories import make_samples

NUM = SelectOptions(answer=AnswerSpec("number"))


def test_largest_group_wins_with_share_of_generated() -> None:
    d = select(make_samples(["a 42", "b 41", "c 42", "no number", "d 42.0"]), NUM)
    assert d.answer == "42"
    assert d.confidence == pytest.approx(3 / 5)
    assert [(t.answer, t.votes) for t in d.tally] == [("42", 3), ("41", 1)]
    assert d.unanswered == 1
    assert sum(t.votes for t in d.tally) + d.unanswered == 5
    assert d.tally[0].share == pytest.approx(0.6)


def test_tie_goes_to_the_group_that_appeared_first() -> None:
    d = select(make_samples(["7", "9", "9", "7"]), NUM)
    assert d.answer == "7"
    d = select(make_samples(["9", "7", "7", "9"]), NUM)
    assert d.answer == "9"


def test_returned_text_is_the_winner_member_with_best_mean_logprob() -> None:
    d = select(make_samples(["x 5", "y 5", "z 6", "w 5"], [-2.0, -0.5, -0.1, -0.5]), NUM)
    assert d.answer == "5"
    assert d.chosen == 1  # -0.5 beats -2.0; the tie with sample 3 goes to the earlier one


def test_five_is_not_five_hundred() -> None:
    d = select(make_samples(["5", "500", "500"]), NUM)
    assert d.answer == "500"
    assert [t.votes for t in d.tally] == [2, 1]


def test_empty_answers_never_win() -> None:
    opts = SelectOptions(answer=AnswerSpec("text"))
    d = select(make_samples(["", "  ", "Paris"]), opts)
    assert d.answer == "Paris" and d.unanswered == 2
    assert d.confidence == pytest.approx(1 / 3)


def test_no_answer_at_all() -> None:
    d = select(make_samples(["no", "digits"], [-3.0, -1.0]), NUM)
    assert d.answer is None and d.confidence == 0.0 and d.tally == []
    assert d.chosen == 1 and d.unanswered == 2


def test_ranking_lists_distinct_answers_in_tally_order() -> None:
    d = select(make_samples(["1", "2", "2", "3", "3", "3"]), NUM)
    assert [t.answer for t in d.tally] == ["3", "2", "1"]
    assert d.ranking == [3, 1, 0]


def test_grouping_is_greedy_against_representatives() -> None:
    from ponder.answers import Answer

    answers = [Answer("a", "text"), None, Answer("b", "text"), Answer("a", "text")]
    groups = group_answers(answers, lambda x, y: x.text == y.text)
    assert [g.members for g in groups] == [[0, 3], [2]]


@given(st.lists(st.sampled_from(["1", "2", "3", "none"]), min_size=1, max_size=30))
def test_invariants_property(texts: list[str]) -> None:
    d = select(make_samples(texts), NUM)
    n = len(texts)
    assert sum(t.votes for t in d.tally) + d.unanswered == n
    assert 0.0 <= d.confidence <= 1.0
    if d.tally:
        assert d.confidence == pytest.approx(d.tally[0].votes / n)
        assert max(t.votes for t in d.tally) == d.tally[0].votes
        assert d.answers[d.chosen] is not None and d.answers[d.chosen].text == d.answer
