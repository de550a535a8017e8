"""Issue 27: the pure parts of usc, aggregate and verify (docs/strategies.md sections 7-9): the
usc reply's pick, P(Yes) over a next-token top-k, the decisions given a pick or scores, the
prompts' placeholders and bounds."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from ponder.answers import AnswerSpec
from ponder.strategies import SelectOptions, aggregate, prompts, usc, verify
from ponder.verifiers import yes_probability

from .factories import make_samples

NUMBER = SelectOptions(answer=AnswerSpec(format="number"))
FREE = SelectOptions(answer=AnswerSpec(format="none"))


@pytest.mark.parametrize(
    ("reply", "n", "want"),
    [
        ("The most consistent response is Response 2", 4, 2),
        ("Response 1 and Response 3 agree; the most consistent response is Response 3.", 4, 3),
        ("The most consistent response is Response 7", 4, None),  # out of range
        ("response #0", 2, 0),
        ("I cannot tell.", 4, None),
    ],
)
def test_the_usc_pick_is_the_last_response_named(reply: str, n: int, want: int | None) -> None:
    assert usc.picked(reply, n) == want


def test_usc_confidence_is_the_picked_answers_share() -> None:
    samples = make_samples(["It is 8.", "8", "It is 9.", "8 apples"])
    d = usc.select(samples, NUMBER, 2)
    assert d.chosen == 2 and d.answer == "9" and d.confidence == pytest.approx(0.25)
    assert [t.answer for t in d.tally] == ["9", "8"]  # the pick's group first
    fallback = usc.select(samples, NUMBER, None)
    assert fallback.chosen == 0 and fallback.notes["usc"]["fallback"] is True
    assert fallback.confidence == pytest.approx(0.75)
    free = usc.select(samples, FREE, 1)
    assert free.answer is None and free.confidence is None and free.tally == []


def test_aggregate_confidence_is_the_candidates_agreement_or_none() -> None:
    samples = make_samples(["8", "It is 8.", "9", "Altogether 8 apples."])
    d = aggregate.select(samples, NUMBER)
    assert d.chosen == 3 and d.answer == "8" and d.confidence == pytest.approx(2 / 3)
    odd = aggregate.select(make_samples(["8", "9", "It is 7"]), NUMBER)
    assert odd.answer == "7" and odd.confidence == 0.0
    none = aggregate.select(make_samples(["8", "9", "I do not know"]), NUMBER)
    assert none.answer is None and none.confidence is None


def test_yes_probability_is_normalised_over_the_variants() -> None:
    top = [("Yes", math.log(0.5)), (" yes", math.log(0.1)), ("No", math.log(0.2)), ("The", -1)]
    assert yes_probability(top) == pytest.approx(0.6 / 0.8)
    assert yes_probability([("Maybe", -0.1)]) is None
    assert yes_probability([("NO.", 0.0)]) == 0.0


def test_verify_best_and_weighted_vote() -> None:
    samples = make_samples(["8", "9", "8", "9", "9"])
    scores = [0.9, 0.95, 0.8, 0.1, None]
    best = verify.select(samples, NUMBER, scores)
    assert best.chosen == 1 and best.answer == "9" and best.confidence == 0.95
    weighted = SelectOptions(
        answer=AnswerSpec(format="number"), own=verify.VerifyOptions(select="weighted_vote")
    )
    d = verify.select(samples, weighted, scores)
    assert d.answer == "8" and d.chosen == 0  # 1.7 against 1.05
    assert d.confidence == pytest.approx(1.7 / 2.75)
    assert d.scores["verification"] == scores and d.notes["verify"]["unscored"] == 1


def test_prompts_fill_once_and_replacements_are_checked() -> None:
    filled = prompts.fill("Q: {question} R: {response}", question="{response}?", response="7")
    assert filled == "Q: {response}? R: 7"  # a value is not filled again
    assert "Response 1: b" in prompts.numbered(["a", " b "])
    with pytest.raises(ValidationError, match="exactly once"):
        usc.UscOptions(prompt="Pick: {responses}")
    with pytest.raises(ValidationError, match="exactly once"):
        verify.VerifyOptions(prompt="{question} {response} {response}")
    assert verify.VerifyOptions(prompt="{question}\n{response}\nYes or No?").prompt
