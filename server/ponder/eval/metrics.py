"""Accuracy with a bootstrap interval, expected calibration error and Brier score (pure)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..calibration import ece

__all__ = ["bootstrap_ci", "brier", "ece", "reliability"]


def bootstrap_ci(
    per_problem: Sequence[float], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of per-problem scores and its percentile bootstrap interval (problems resampled)."""
    x = np.asarray(per_problem, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return (
        float(x.mean()),
        float(np.percentile(means, tail)),
        float(np.percentile(means, 100 - tail)),
    )


def brier(confidence: Sequence[float], correct: Sequence[float]) -> float:
    """Mean squared difference between confidence and correctness (0 is perfect)."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    return float(((c - y) ** 2).mean()) if c.size else float("nan")


def reliability(
    confidence: Sequence[float], correct: Sequence[float], bins: int = 10
) -> list[tuple[float, float, int]]:
    """Per non-empty bin: (mean confidence, accuracy, count), for reliability diagrams."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    idx = np.minimum((c * bins).astype(int), bins - 1)
    return [
        (float(c[idx == b].mean()), float(y[idx == b].mean()), int((idx == b).sum()))
        for b in range(bins)
        if (idx == b).any()
    ]
