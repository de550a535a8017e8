"""RPC: Perplexity Consistency + Reasoning Pruning (Zhou et al. 2025), docs/strategies.md 4."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..answers import Answer, equivalent
from ..types import Sample
from . import weibull
from .base import (
    Decision,
    Equal,
    Group,
    SelectOptions,
    StrategyOptions,
    extract_all,
    first_best,
    group_answers,
    score_tally,
)
from .strategy import Selection

NAME = "rpc"
MIN_SAMPLES_TO_PRUNE = 4


class RpcOptions(StrategyOptions):
    """`ponder.rpc`: `prune`: Reasoning Pruning with the Weibull mixture; false = plain
    Perplexity Consistency."""

    prune: bool = True


def path_probability(sample: Sample) -> float:
    """exp(mean raw token logprob): the inverse perplexity of the sample."""
    return math.exp(sample.mean_logprob)


MEAN_TOLERANCE = 1e-9
"""p_i must be below the mean by more than this (relative): equal path probabilities are not
"below" their own mean because of float rounding ([0.7] * 64 prunes nothing)."""


def prune(p: Sequence[float]) -> tuple[list[bool], dict[str, object]]:
    """Reasoning Pruning: prune i iff posterior(high component) < 0.5 and p_i < mean(p) (by
    more than MEAN_TOLERANCE); the max-p sample is never pruned. Skipped (nothing pruned) for
    N < 4 or a failed fit."""
    n = len(p)
    if n < MIN_SAMPLES_TO_PRUNE:
        return [False] * n, {"pruning": f"skipped: N < {MIN_SAMPLES_TO_PRUNE}"}
    fitted = weibull.fit(p)
    if fitted is None:
        return [False] * n, {"pruning": "skipped: the Weibull mixture fit failed"}
    post = fitted.posterior_high(p)
    below = float(np.mean(p)) * (1 - MEAN_TOLERANCE)
    top = first_best(p)
    flags = [bool(post[i] < 0.5 and p[i] < below and i != top) for i in range(n)]
    return flags, {
        "pruning": "applied",
        "pruned": sum(flags),
        "weibull": {
            "w": fitted.w,
            "k1": fitted.k1,
            "lambda1": fitted.lam1,
            "k2": fitted.k2,
            "lambda2": fitted.lam2,
            "loglik": fitted.loglik,
        },
    }


def pc_score(
    group: Group, samples: Sequence[Sample], p: Sequence[float], pruned: Sequence[bool]
) -> float:
    """Sum of p_i over the DISTINCT completion texts of the group's unpruned members."""
    seen: set[str] = set()
    score = 0.0
    for i in group.members:
        if pruned[i] or samples[i].text in seen:
            continue
        seen.add(samples[i].text)
        score += p[i]
    return score


_NONE = Answer("", "text")
"""Placeholder answer of the group of unanswered samples (only its members are read)."""


def select(
    samples: Sequence[Sample], options: SelectOptions, equal: Equal = equivalent
) -> Decision:
    """Winner = the answer group with the largest PC score (ties: earliest group); the text shown
    is its member with the largest p_i; confidence = winner's score / (sum of group scores +
    the unanswered samples' p_i over their distinct texts, pruned or not)."""
    if not samples:
        raise ValueError("RPC needs at least one sample")
    answers = extract_all(samples, options.answer)
    p = [path_probability(s) for s in samples]
    if options.of(RpcOptions).prune:
        pruned, notes = prune(p)
    else:
        pruned, notes = [False] * len(samples), {"pruning": "off"}
    groups = group_answers(answers, equal)
    scores = [pc_score(g, samples, p, pruned) for g in groups]
    # Honest denominator: the unanswered samples' path probability counts too (distinct
    # texts, as PC counts; pruning is not applied to them: it chooses between answers, and a
    # sample with no answer is evidence against all of them), so they lower the winner's
    # share instead of vanishing.
    unanswered = Group(_NONE, [i for i, a in enumerate(answers) if a is None])
    total = sum(scores) + pc_score(unanswered, samples, p, [False] * len(samples))
    _, tally, ranking = score_tally(groups, scores, p, total)
    if groups:
        chosen, answer, confidence = ranking[0], tally[0].answer, tally[0].share
    else:
        chosen, answer, confidence = first_best(p), None, 0.0
        ranking = [chosen]
    return Decision(
        strategy=NAME,
        chosen=chosen,
        answer=answer,
        confidence=confidence,
        tally=tally,
        ranking=ranking,
        answers=answers,
        unanswered=sum(a is None for a in answers),
        scores={"path_probability": p},
        pruned=pruned,
        notes=notes,
    )


STRATEGY = Selection(NAME, select, options_model=RpcOptions, stats=frozenset({"logprob"}))
