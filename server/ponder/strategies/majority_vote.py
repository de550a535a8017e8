"""Majority vote / self-consistency (Wang et al. 2022), docs/strategies.md section 2."""

from __future__ import annotations

from collections.abc import Sequence

from ..answers import equivalent
from ..types import Sample
from .base import (
    Decision,
    Equal,
    SelectOptions,
    TallyEntry,
    best_member,
    extract_all,
    group_answers,
)
from .fields import field_vote
from .strategy import Selection

NAME = "majority_vote"


def select(
    samples: Sequence[Sample], options: SelectOptions, equal: Equal = equivalent
) -> Decision:
    """Winner = the largest group (ties: the group whose first member came earliest); the text
    shown = its member with the highest mean token logprob; confidence = votes / generated."""
    if not samples:
        raise ValueError("majority vote needs at least one sample")
    answers = extract_all(samples, options.answer)
    if options.answer.vote == "field":
        return field_vote(NAME, samples, answers)
    groups = group_answers(answers, equal)
    mean_lp = [s.mean_logprob for s in samples]
    n = len(samples)
    # sorted() is stable and groups are already in first-member order: ties keep it.
    ranked = sorted(groups, key=lambda g: -len(g.members))
    unanswered = sum(a is None for a in answers)
    tally = [
        TallyEntry(g.answer.text, len(g.members), float(len(g.members)), len(g.members) / n)
        for g in ranked
    ]
    ranking = [best_member(g.members, mean_lp) for g in ranked]
    if ranked:
        chosen, answer, confidence = ranking[0], ranked[0].answer.text, len(ranked[0].members) / n
    else:
        chosen, answer, confidence = best_member(range(n), mean_lp), None, 0.0
        ranking = [chosen]
    return Decision(
        strategy=NAME,
        chosen=chosen,
        answer=answer,
        confidence=confidence,
        tally=tally,
        ranking=ranking,
        answers=answers,
        unanswered=unanswered,
    )


STRATEGY = Selection(NAME, select, field_vote=True)  # mean logprob only picks the text shown
