"""CNTP, Cautious Next Token Prediction (Wang et al. 2025), docs/strategies.md section 5: the pure
parts. The loop that drives the engine, and the strategy object, are in `cntp_decode`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from ..answers import AnswerSpec, extract
from ..types import Sample
from . import majority_vote
from .base import Decision, SelectOptions, StrategyOptions, TallyEntry

NAME = "cntp"


class CntpOptions(StrategyOptions):
    """`ponder.cntp`: M = max_trials, H_low = entropy_low, H_high = entropy_high (the
    authors' defaults)."""

    max_trials: int = Field(10, ge=1, le=64)
    entropy_low: float = Field(0.01, ge=-1e6, le=1e6)
    entropy_high: float = Field(1.5, ge=-1e6, le=1e6)

    @model_validator(mode="after")
    def _ordered(self) -> CntpOptions:
        if self.entropy_high <= self.entropy_low:
            raise ValueError("entropy_high must be greater than entropy_low")
        return self


def trial_count(entropy: float, opts: CntpOptions) -> int:
    """N_t = int(1 + (M - 1) * clip((H - H_low) / (H_high - H_low), 0, 1)) (authors' code; the
    paper's Algorithm 1 writes floor((H - H_low) / (H_high - H_low) * M) clipped to [1, M])."""
    span = opts.entropy_high - opts.entropy_low
    x = min(max((entropy - opts.entropy_low) / span, 0.0), 1.0)
    return int(1 + (opts.max_trials - 1) * x)


def branch_threshold(opts: CntpOptions) -> float:
    """The lowest entropy at which trial_count reaches 2 (inf when max_trials is 1)."""
    if opts.max_trials <= 1:
        return math.inf
    h = opts.entropy_low + (opts.entropy_high - opts.entropy_low) / (opts.max_trials - 1)
    # float rounding at the boundary: move to the exact float where the formula flips
    while trial_count(h, opts) < 2:
        h = math.nextafter(h, math.inf)
    while trial_count(math.nextafter(h, -math.inf), opts) >= 2:
        h = math.nextafter(h, -math.inf)
    return h


def perplexity(logprob_processed: npt.NDArray[np.float32]) -> float:
    """exp(-mean logprob_processed) of a trial; inf for an empty one."""
    if len(logprob_processed) == 0:
        return math.inf
    return math.exp(-float(np.mean(logprob_processed, dtype=np.float64)))


def pick_trial(perplexities: Sequence[float]) -> int:
    """The lowest-perplexity trial; the first on ties."""
    return min(range(len(perplexities)), key=lambda i: (perplexities[i], i))


def single_decision(sample: Sample, spec: AnswerSpec) -> Decision:
    """One CNTP output: confidence = exp(mean raw logprob) of the output, 0 when it has no
    answer (there is nothing to be confident in)."""
    answer = extract(sample.text, spec)
    confidence = math.exp(sample.mean_logprob) if sample.n_tokens and answer else 0.0
    tally = [TallyEntry(answer.text, 1, confidence, 1.0)] if answer else []
    return Decision(
        strategy=NAME,
        chosen=0,
        answer=answer.text if answer else None,
        confidence=confidence,
        tally=tally,
        ranking=[0],
        answers=[answer],
        unanswered=0 if answer else 1,
    )


def decide(samples: Sequence[Sample], options: SelectOptions) -> Decision:
    """One decode is reported as is (`single_decision`); several are majority-voted (CNTP +
    self-consistency, the paper's section 4.4)."""
    if len(samples) == 1:
        return single_decision(samples[0], options.answer)
    return dataclasses.replace(majority_vote.select(samples, options), strategy=NAME)
