"""Step-level search, docs/strategies.md section 10: the pure parts. A step is the text up to
a delimiter (or `max_step_tokens`); partial solutions are scored after each step; `beam` keeps
the best, `particles` resamples them in proportion to their weights. The loop that drives the
engine, the scorers that call a model, and the strategy objects are in `search_run`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from ..types import Sample
from .base import (
    Decision,
    Group,
    SelectOptions,
    StrategyOptions,
    extract_all,
    group_answers,
    score_tally,
)

Scorer = Literal["self_certainty", "confidence", "verify"]

PROBABILITY_SCORERS = frozenset({"verify"})
"""Scorers whose score is a probability (P(Yes) of a verifier): their log-weight is its logit."""

CONFIDENCE_TOP_K = 20
"""DeepConf's k: a token's confidence is minus the mean of its 20 most probable logprobs."""


class SearchOptions(StrategyOptions):
    """What `beam` and `particles` share: where a step ends (`delimiter`, or `max_step_tokens`
    tokens), at most `max_steps` steps, and how a partial solution is scored (`scorer`; an
    external verifier by name with `verifier`)."""

    delimiter: str = Field("\n\n", min_length=1, max_length=16)
    max_step_tokens: int = Field(64, ge=1, le=1024)
    max_steps: int = Field(16, ge=1, le=64)
    scorer: Scorer = "self_certainty"
    verifier: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("delimiter")
    @classmethod
    def _visible(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("the delimiter cannot contain NUL")
        return v


class BeamOptions(SearchOptions):
    """`ponder.beam`: `beams` partial solutions kept per step, each expanded into `expand`
    (ponder.samples = beams x expand candidates per step; by default beams is 2 when the
    samples are even, else 1, and expand = samples / beams); the final choice by `select`:
    "score" (the best-scored finished beam) or "vote" (a majority vote over the finished
    beams)."""

    beams: int | None = Field(None, ge=1, le=64)
    expand: int | None = Field(None, ge=1, le=64)
    select: Literal["score", "vote"] = "score"


class ParticlesOptions(SearchOptions):
    """`ponder.particles`: ponder.samples particles; after each step the weights are
    softmax(log-weight / `temperature`) and the particles are resampled multinomially; the
    answer is a vote weighted by the final weights."""

    temperature: float = Field(1.0, ge=0.01, le=100.0)


def beam_width(opts: BeamOptions, samples: int) -> int:
    """The beams kept per step: as asked, else 2 for an even number of samples, else 1."""
    if opts.beams is not None:
        return opts.beams
    return 2 if samples % 2 == 0 else 1


def log_weight(score: float | None, scorer: str) -> float:
    """A partial solution's log-weight: the logit of a probability score (its_hub's particle
    filtering: inv_sigmoid of the PRM score, clipped at 1e-7), the score itself for the
    model's own confidence (mean self-certainty or DeepConf confidence, already a log-scale
    quantity); -inf without a score (the verifier gave none)."""
    if score is None or math.isnan(score):
        return -math.inf
    if scorer in PROBABILITY_SCORERS:
        p = min(max(score, 1e-7), 1.0 - 1e-7)
        return math.log(p / (1.0 - p))
    return float(score)


def softmax(log_weights: Sequence[float], temperature: float = 1.0) -> list[float]:
    """softmax(log_weights / temperature); uniform when none is finite (nothing was scored)."""
    x = np.asarray(log_weights, dtype=np.float64) / temperature
    finite = np.isfinite(x)
    if not finite.any():
        return [1.0 / len(x)] * len(x)
    x = np.where(finite, x, -np.inf)
    e = np.exp(x - x[finite].max())
    return [float(v) for v in e / e.sum()]


def resample(weights: Sequence[float], n: int, rng: np.random.Generator) -> list[int]:
    """n indices drawn with replacement in proportion to `weights` (multinomial resampling),
    sorted so that copies of one particle sit together."""
    p = np.asarray(weights, dtype=np.float64)
    return sorted(int(i) for i in rng.choice(len(p), size=n, replace=True, p=p / p.sum()))


def top(scores: Sequence[float | None], k: int) -> list[int]:
    """The indices of the k best scores, best first (ties: the earlier; unscored last)."""
    key = [(-math.inf if s is None or math.isnan(s) else s) for s in scores]
    return sorted(range(len(key)), key=lambda i: (-key[i], i))[:k]


def weighted_vote(
    name: str, samples: Sequence[Sample], options: SelectOptions, weights: Sequence[float]
) -> Decision:
    """Answers voted with `weights` (uniform weights: a majority vote): the heaviest answer
    wins, its heaviest member is shown (ties: the earlier), confidence = its share of every
    weight. Without any answer: the heaviest sample, confidence 0."""
    return _vote(name, samples, options, weights)[0]


def _vote(
    name: str, samples: Sequence[Sample], options: SelectOptions, weights: Sequence[float]
) -> tuple[Decision, list[Group]]:
    """`weighted_vote`, and the answer groups it formed."""
    answers = extract_all(samples, options.answer)
    groups = group_answers(answers)
    total = float(sum(weights))
    order, tally, shown = score_tally(
        groups, [sum(weights[i] for i in g.members) for g in groups], weights, total
    )
    if groups:
        chosen, answer, confidence = shown[0], groups[order[0]].answer.text, tally[0].share
        ranking = shown
    else:
        chosen = max(range(len(samples)), key=lambda i: (weights[i], -i))
        answer, confidence, ranking = None, 0.0, [chosen]
    decision = Decision(
        strategy=name,
        chosen=chosen,
        answer=answer,
        confidence=confidence,
        tally=tally,
        ranking=ranking,
        answers=answers,
        unanswered=sum(a is None for a in answers),
        scores={"weight": [float(w) for w in weights]},
    )
    return decision, groups


def beam_decision(
    name: str,
    samples: Sequence[Sample],
    options: SelectOptions,
    scores: Sequence[float | None],
    select: str,
) -> Decision:
    """The finished beams' decision. vote: a majority vote over them. score: the best-scored
    beam (ties: the earlier) with its answer; the tally is still the vote, and confidence is
    the share of beams whose answer is equivalent to the chosen one."""
    n = len(samples)
    decision, groups = _vote(name, samples, options, [1.0] * n)
    decision.scores = {"score": list(scores)}
    if select == "vote":
        return decision
    chosen = top(scores, 1)[0]
    answer = decision.answers[chosen]
    group = next((g for g in groups if chosen in g.members), None)
    members = group.members if group is not None else [chosen]
    decision.chosen = chosen
    decision.answer = answer.text if answer is not None else None
    decision.confidence = len(members) / n if answer is not None else 0.0
    decision.ranking = [chosen] + [i for i in decision.ranking if i not in members]
    if group is not None:  # the chosen answer's entry first
        first = [t for t in decision.tally if t.answer == group.answer.text]
        decision.tally = first + [t for t in decision.tally if t.answer != group.answer.text]
    return decision
