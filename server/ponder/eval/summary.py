"""Tables of `ponder eval`: accuracy, confidence, calibration error and tokens per strategy and
budget (`summarize`), and the calibration maps fitted on one half and measured on the other
(`calibrate`)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..calibration import Calibration, CalibrationMap, fit
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
    ece_low: float = float("nan")
    ece_high: float = float("nan")
    """The calibrated ECE's 95% bootstrap interval (held-out problems resampled)."""
    floor: float = float("nan")
    """The noise floor: the median ECE a perfectly calibrated map would score on the same
    held-out confidences (outcomes drawn as Bernoulli(calibrated confidence))."""
    floor_high: float = float("nan")
    """That floor's 95th percentile."""
    method: str = ""


def calibrate(
    trials: dict[str, dict[str, dict[int, list[Trial]]]], temperature: float | None = None
) -> tuple[Calibration, list[CalibrationRow]]:
    """Per strategy and budget, fit a map on the problems whose id hashes even and measure
    ECE before and after on the others (each problem's subset decisions stay together)."""
    fit_on: dict[tuple[str, int], list[Trial]] = defaultdict(list)
    held: dict[tuple[str, int], list[list[Trial]]] = defaultdict(list)
    for pid, per_problem in trials.items():
        for strategy, per in per_problem.items():
            for n, ts in per.items():
                if hash_id(pid) % 2 == 0:
                    fit_on[(strategy, n)] += ts
                else:
                    held[(strategy, n)].append(list(ts))
    maps, rows = [], []
    for (strategy, n), ts in sorted(fit_on.items()):
        problems = held.get((strategy, n), [])
        test = [t for p in problems for t in p]
        if any(math.isnan(t.confidence) for t in ts + test):
            continue  # a strategy that reports no confidence for some decisions: no map
        m = fit(strategy, n, [t.confidence for t in ts], [t.correct for t in ts], temperature)
        maps.append(m)
        raw = [t.confidence for t in test]
        right = [float(t.correct) for t in test]
        row = CalibrationRow(
            strategy,
            n,
            len(ts),
            len(test),
            ece(raw, right) if test else float("nan"),
            ece([m(c) for c in raw], right) if test else float("nan"),
            method=m.method,
        )
        if test:
            row.ece_low, row.ece_high = _ece_interval(problems, m)
            row.floor, row.floor_high = noise_floor(
                [[m(t.confidence) for t in p] for p in problems]
            )
        rows.append(row)
    return Calibration(tuple(maps)), rows


def _ece_interval(
    problems: list[list[Trial]], m: CalibrationMap, resamples: int = 500, seed: int = 0
) -> tuple[float, float]:
    """The calibrated ECE's 95% percentile bootstrap interval, problems resampled (a
    problem's subset decisions stay together)."""
    rng = np.random.default_rng(seed)
    conf = [[m(t.confidence) for t in p] for p in problems]
    right = [[float(t.correct) for t in p] for p in problems]
    got = []
    for _ in range(resamples):
        pick = rng.integers(0, len(problems), size=len(problems))
        got.append(ece([c for i in pick for c in conf[i]], [y for i in pick for y in right[i]]))
    return float(np.percentile(got, 2.5)), float(np.percentile(got, 97.5))


def noise_floor(
    calibrated: Sequence[Sequence[float]], draws: int = 500, seed: int = 0
) -> tuple[float, float]:
    """The ECE a perfectly calibrated map would score on these confidences (grouped by
    problem): per draw one decision of each problem, its outcome drawn as
    Bernoulli(confidence), ECE measured; (median, 95th percentile) over `draws`. One decision
    per problem because a problem's decisions (its subsets) share its difficulty: the
    independent evidence is about one decision per problem, not every subset. A held-out ECE
    at or under the floor cannot be told from sampling noise on this many problems."""
    groups = [np.asarray(g, dtype=np.float64) for g in calibrated if len(g)]
    rng = np.random.default_rng(seed)
    got = []
    for _ in range(draws):
        c = np.asarray([g[rng.integers(len(g))] for g in groups])
        got.append(ece(c, (rng.random(c.size) < c).astype(np.float64)))
    return float(np.median(got)), float(np.percentile(got, 95))
