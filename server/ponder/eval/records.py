"""What `ponder eval` keeps per problem: the stored candidates (`Candidate`), a problem's record
(`ProblemRecord`), one graded decision (`Trial`); the samples the selection functions read
are rebuilt from candidates (`to_samples`), and replay files become records
(`replay_records`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..types import Sample
from .datasets import ReplayProblem


@dataclass
class Candidate:
    """One stored sample: what selection needs, and what it cost."""

    text: str
    tokens: float
    mean_logprob: float | None = None
    self_certainty: float | None = None
    confidence: list[float] | None = None
    """DeepConf's per-token confidence (stored per token: the online rule is replayed on it)."""


@dataclass
class ProblemRecord:
    id: str
    gold: str
    format: str
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)  # by pool_of()
    live: dict[str, dict[int, Decided]] = field(default_factory=dict)
    """Decisions of strategies that ask the model again after sampling (usc, aggregate,
    verify): one request per budget, by strategy and N."""
    results: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    gold_parsed: str | None = None
    """The gold answer as the grader reads it (problems.jsonl), next to each chosen answer."""


@dataclass(frozen=True)
class Decided:
    """A live strategy's decision on one problem: the answer it chose, its confidence (None
    when it has none), and every token the request generated (candidates and follow-up calls:
    the compute a budget is matched on)."""

    answer: str | None
    confidence: float | None
    tokens: float


@dataclass(frozen=True)
class Trial:
    correct: bool
    confidence: float
    """NaN when the strategy reported none (ECE and Brier leave it out)."""
    tokens: float
    answer: str | None = None
    """The chosen answer as extracted (None: no sample had one), for auditing the grader."""
    samples: int = 0
    """Samples used, when an adaptive rule stopped early (0: the budget's own N)."""


def to_samples(cands: Sequence[Candidate]) -> list[Sample]:
    """Samples that carry exactly what the selection functions read (text, mean logprob, mean
    self-certainty) as one-element stat arrays, and DeepConf's per-token confidence (then one
    token id per stored token, so its stop rule can be replayed)."""
    out = []
    for i, c in enumerate(cands):
        lp = np.array([c.mean_logprob if c.mean_logprob is not None else 0.0], np.float32)
        sc = np.array([c.self_certainty if c.self_certainty is not None else 0.0], np.float32)
        conf = np.asarray(c.confidence or [], np.float32)
        zero = np.zeros(1, np.float32)
        s = Sample(i, c.text, list(range(conf.size)), "stop", lp, sc, lp.copy(), zero)
        s.confidence = conf
        out.append(s)
    return out


def replay_records(problems: Sequence[ReplayProblem]) -> list[ProblemRecord]:
    return [
        ProblemRecord(
            p.id,
            p.gold,
            p.format,
            {
                "sampling": [
                    Candidate(
                        t,
                        float(p.tokens[i]) if i < len(p.tokens) else math.nan,
                        p.mean_logprob[i] if p.mean_logprob else None,
                        p.self_certainty[i] if p.self_certainty else None,
                        p.confidence[i] if p.confidence else None,
                    )
                    for i, t in enumerate(p.texts)
                ]
            },
        )
        for p in problems
    ]


def hash_id(text: str) -> int:
    """A stable (not salted) hash for seeding per-problem subset draws."""
    h = 1469598103934665603
    for ch in text.encode():
        h = ((h ^ ch) * 1099511628211) % 2**63
    return h
