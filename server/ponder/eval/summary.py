"""Tables of `ponder eval`: accuracy, confidence, calibration error and tokens per strategy and
budget (`summarize`), and the calibration maps fitted on one half and measured on the other
(`calibrate`)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..calibration import Calibration, fit
from .metrics import bootstrap_ci, brier, ece
from .records import Trial, hash_id


@dataclass
class SummaryRow:
    strategy: str
    n: int
    subsets: int
    problems: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_tokens: float
    ece: float
    brier: float
    mean_samples: float
    """Samples used per decision (below N for adaptive rows that stopped early)."""


def summarize(
    trials: dict[str, dict[str, dict[int, list[Trial]]]], seed: int, count: int
) -> list[SummaryRow]:
    """Rows per strategy and budget: accuracy (+ bootstrap 95% interval over problems), mean
    generated tokens per problem, ECE (10 bins) and Brier over all subset decisions."""
    by: dict[tuple[str, int], list[list[Trial]]] = defaultdict(list)
    for per_problem in trials.values():
        for strategy, per in per_problem.items():
            for n, ts in per.items():
                by[(strategy, n)].append(ts)
    rows = []
    for (strategy, n), problems in sorted(by.items()):
        acc = [float(np.mean([t.correct for t in ts])) for ts in problems]
        mean, lo, hi = bootstrap_ci(acc, seed=seed)
        flat = [t for ts in problems for t in ts]
        rated = [t for t in flat if not math.isnan(t.confidence)]  # a confidence to grade
        conf = [t.confidence for t in rated]
        corr = [float(t.correct) for t in rated]
        rows.append(
            SummaryRow(
                strategy,
                n,
                max(len(ts) for ts in problems),
                len(problems),
                mean,
                lo,
                hi,
                float(np.mean([t.tokens for t in flat])),
                ece(conf, corr) if rated else math.nan,
                brier(conf, corr) if rated else math.nan,
                float(np.mean([t.samples or n for t in flat])),
            )
        )
    return rows


@dataclass
class CalibrationRow:
    """A fitted map's effect on the held-out half of the problems."""

    strategy: str
    n: int
    fitted_on: int
    held_out: int
    ece_raw: float
    ece_calibrated: float


def calibrate(
    trials: dict[str, dict[str, dict[int, list[Trial]]]],
) -> tuple[Calibration, list[CalibrationRow]]:
    """Per strategy and budget, fit a map on the problems whose id hashes even and measure
    ECE before and after on the others (each problem's subset decisions stay together)."""
    fit_on: dict[tuple[str, int], list[Trial]] = defaultdict(list)
    held: dict[tuple[str, int], list[Trial]] = defaultdict(list)
    for pid, per_problem in trials.items():
        side = fit_on if hash_id(pid) % 2 == 0 else held
        for strategy, per in per_problem.items():
            for n, ts in per.items():
                side[(strategy, n)] += ts
    maps, rows = [], []
    for (strategy, n), ts in sorted(fit_on.items()):
        if any(math.isnan(t.confidence) for t in ts + held.get((strategy, n), [])):
            continue  # a strategy that reports no confidence for some decisions: no map
        m = fit(strategy, n, [t.confidence for t in ts], [t.correct for t in ts])
        maps.append(m)
        test = held.get((strategy, n), [])
        raw = [t.confidence for t in test]
        right = [float(t.correct) for t in test]
        rows.append(
            CalibrationRow(
                strategy,
                n,
                len(ts),
                len(test),
                ece(raw, right) if test else float("nan"),
                ece([m(c) for c in raw], right) if test else float("nan"),
            )
        )
    return Calibration(tuple(maps)), rows
