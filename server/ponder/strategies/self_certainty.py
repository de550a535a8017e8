"""Self-certainty best-of-N with Borda voting (Kang, Zhao, Song 2025), docs/strategies.md section 3.

Per sample SC = mean over its tokens of KL(U || softmax z), on raw logits over the full
vocabulary (the engine's `kl_uniform`). This project averages the distributions that generated
t_1..t_n (the paper's formula); the authors' code re-scores and averages the positions after
each response token instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from ..answers import equivalent
from ..types import Sample
from .base import (
    Decision,
    Equal,
    SelectOptions,
    StrategyOptions,
    extract_all,
    first_best,
    group_answers,
    score_tally,
)
from .strategy import Selection

NAME = "self_certainty"


class SelfCertaintyOptions(StrategyOptions):
    """`ponder.self_certainty`: `vote`: Borda voting (default) or plain best-of-N; `borda_p`:
    the rank exponent p."""

    vote: bool = True
    borda_p: float = Field(0.5, ge=0.0, le=16.0)


def borda_points(sc: Sequence[float], answered: Sequence[bool], p: float) -> list[float]:
    """Rank samples by SC descending (stable: ties by index); rank r of N gets (N - r + 1)^p
    points; unparsable samples take their rank but get no points."""
    n = len(sc)
    order = sorted(range(n), key=lambda i: -sc[i])
    points = [0.0] * n
    for r, i in enumerate(order, start=1):
        if answered[i]:
            points[i] = float((n - r + 1) ** p)
    return points


def select(
    samples: Sequence[Sample], options: SelectOptions, equal: Equal = equivalent
) -> Decision:
    """Borda mode (default): the answer with the most points wins (ties: earliest group) and its
    highest-SC member is shown; confidence = winner's points / the points all N samples would
    cast had each an answer (unanswered samples weigh in). Best-of-N mode
    (`vote: false`): the highest-SC sample with an answer (else the highest overall); its
    confidence is still its answer's Borda share, so both modes report comparable numbers."""
    if not samples:
        raise ValueError("self-certainty needs at least one sample")
    opts = options.of(SelfCertaintyOptions)
    answers = extract_all(samples, options.answer)
    answered = [a is not None for a in answers]
    sc = [s.self_certainty for s in samples]
    points = borda_points(sc, answered, opts.borda_p)
    groups = group_answers(answers, equal)
    group_points = [sum(points[i] for i in g.members) for g in groups]
    # Honest denominator: every sample's points as if it had an answer, so unanswered samples
    # lower the confidence (one answer among eight samples is not a sure answer).
    total = sum(borda_points(sc, [True] * len(samples), opts.borda_p))
    order, tally, ranking = score_tally(groups, group_points, sc, total)
    share = {g: (group_points[g] / total if total > 0 else 0.0) for g in range(len(groups))}
    if opts.vote:
        if groups:
            chosen, win = ranking[0], order[0]
        else:
            chosen, win = first_best(sc), None
    else:
        pool = [i for i in range(len(samples)) if answered[i]] or list(range(len(samples)))
        chosen = max(pool, key=lambda i: (sc[i], -i))
        win = next((g for g in range(len(groups)) if chosen in groups[g].members), None)
        if win is not None:  # the chosen sample's answer leads the ranking
            ranking = [chosen] + [r for k, r in enumerate(ranking) if order[k] != win]
            tally = [tally[order.index(win)]] + [t for k, t in enumerate(tally) if order[k] != win]
    if not groups:
        ranking = [chosen]
    return Decision(
        strategy=NAME,
        chosen=chosen,
        answer=groups[win].answer.text if win is not None else None,
        confidence=share[win] if win is not None else 0.0,
        tally=tally,
        ranking=ranking,
        answers=answers,
        unanswered=sum(not a for a in answered),
        scores={"borda_points": points},
        notes={"mode": "borda" if opts.vote else "best_of_n", "borda_p": opts.borda_p},
    )


STRATEGY = Selection(
    NAME, select, options_model=SelfCertaintyOptions, stats=frozenset({"kl_uniform"})
)
