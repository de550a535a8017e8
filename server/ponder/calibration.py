"""Calibrated confidence: a monotone map from a strategy's raw confidence to the accuracy it
had on held-out data, fitted by `ponder eval --calibrate` and applied by the server
(`PONDER_CALIBRATION=path`).

A map is fitted per strategy variant, sample budget and temperature. Three monotone
families are fitted and the one with the lowest cross-validated ECE is kept (`fit`):
- Platt scaling: a logistic curve in logit(confidence) (Platt 1999), 2 parameters;
- beta calibration: a logistic curve in (ln c, -ln(1 - c)) with non-negative weights (Kull,
  Silva Filho and Flach 2017), 3 parameters, monotone by construction;
- isotonic regression on bins of at least MIN_BIN decisions (scipy's `isotonic_regression`
  on the bins' mean outcomes): the non-decreasing step function, without the one-decision
  steps that overfit a few hundred decisions.
A map is stored as breakpoints and applied by linear interpolation between them (clamped at
the ends), so a higher raw confidence never maps to a lower calibrated one. Leaf module:
numpy, scipy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import isotonic_regression, minimize
from scipy.special import expit

MIN_BIN = 10
"""Decisions per step of an isotonic map at least; also at least a tenth of the decisions
(STEPS), so a map has at most about ten steps whatever it is fitted on."""
STEPS = 10
FOLDS = 5
"""Cross-validation folds that choose among the map families."""
GRID = 101
"""Breakpoints a smooth map is stored with."""
_EPS = 1e-4

VERSION = 2
READS = (1, 2)
"""Versions `load` reads: 1 had no fitted temperature."""


@dataclass(frozen=True)
class CalibrationMap:
    """raw confidence x -> calibrated y, for one strategy at one sample budget."""

    strategy: str
    samples: int
    x: list[float]
    y: list[float]
    fitted_on: int
    """How many (confidence, correct) pairs the map was fitted on."""
    temperature: float | None = None
    """The sampling temperature of the decisions it was fitted on (None: not recorded)."""
    method: str = "isotonic"
    """The map's family (`fit`): platt, beta or isotonic."""

    def __call__(self, raw: float) -> float:
        return float(np.interp(raw, self.x, self.y))


def ece(confidence: npt.ArrayLike, correct: npt.ArrayLike, bins: int = 10) -> float:
    """Expected calibration error: sum over equal-width confidence bins of
    (bin size / total) * |accuracy in bin - mean confidence in bin|; 1.0 falls in the last bin."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if c.size == 0:
        return float("nan")
    idx = np.minimum((c * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / c.size * abs(y[m].mean() - c[m].mean())
    return float(total)


def _features(x: np.ndarray, family: str) -> np.ndarray:
    c = np.clip(x, _EPS, 1 - _EPS)
    if family == "platt":
        return np.stack([np.log(c / (1 - c))], axis=1)
    return np.stack([np.log(c), -np.log(1 - c)], axis=1)  # beta


def _logistic(x: np.ndarray, y: np.ndarray, family: str) -> tuple[np.ndarray, float]:
    """Weights (non-negative: a monotone map) and intercept of the logistic fit, by
    L-BFGS-B on the log loss (a small ridge keeps separable data finite)."""
    f = _features(x, family)
    k = f.shape[1]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = f @ w[:k] + w[k]
        p = expit(z)
        ll = np.logaddexp(0, z) - y * z  # -log likelihood, stable
        g = p - y
        grad = np.concatenate([f.T @ g, [g.sum()]]) / len(y) + 1e-3 * np.append(w[:k], 0.0)
        return float(ll.mean() + 5e-4 * float(w[:k] @ w[:k])), grad

    w0 = np.append(np.ones(k), 0.0)
    bounds = [(0.0, 50.0)] * k + [(-50.0, 50.0)]
    res = minimize(loss, w0, jac=True, method="L-BFGS-B", bounds=bounds)
    return res.x[:k], float(res.x[k])


def _bins(x: np.ndarray, y: np.ndarray, min_bin: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted decisions grouped into consecutive bins of at least `min_bin` (equal raw values
    never split): each bin's mean confidence, mean outcome and size."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    values, first, counts = np.unique(xs, return_index=True, return_counts=True)
    sums = np.add.reduceat(ys, first)
    xsum = values * counts
    bx, by, bn = [], [], []
    cx = cy = 0.0
    cn = 0
    for v_sum, y_sum, n in zip(xsum, sums, counts, strict=True):
        cx, cy, cn = cx + v_sum, cy + y_sum, cn + int(n)
        if cn >= min_bin:
            bx.append(cx / cn)
            by.append(cy / cn)
            bn.append(cn)
            cx = cy = 0.0
            cn = 0
    if cn:  # the rest joins the last bin (or is the only one)
        if bx:
            total = bn[-1] + cn
            bx[-1] = (bx[-1] * bn[-1] + cx) / total
            by[-1] = (by[-1] * bn[-1] + cy) / total
            bn[-1] = total
        else:
            bx, by, bn = [cx / cn], [cy / cn], [cn]
    return np.asarray(bx), np.asarray(by), np.asarray(bn, dtype=np.float64)


def _fit_family(x: np.ndarray, y: np.ndarray, family: str) -> tuple[list[float], list[float]]:
    """One family's map as breakpoints."""
    if family == "isotonic":
        bx, by, bn = _bins(x, y, max(min(MIN_BIN, max(1, len(x) // 4)), len(x) // STEPS))
        fitted = isotonic_regression(by, weights=bn).x
        return [float(v) for v in bx], [float(min(max(v, 0.0), 1.0)) for v in fitted]
    w, b = _logistic(x, y, family)
    lo, hi = float(x.min()), float(x.max())
    grid = np.linspace(lo, hi, GRID) if hi > lo else np.asarray([lo])
    ys = expit(_features(grid, family) @ w + b)
    ys = np.maximum.accumulate(ys)  # monotone already (w >= 0); guards rounding
    return [float(v) for v in grid], [float(v) for v in ys]


FAMILIES = ("platt", "beta", "isotonic")


def cross_validated(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Each family's ECE on held-out folds (FOLDS folds; decisions assigned at random with
    `seed`), pooled over the folds."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(x)) % FOLDS
    out: dict[str, float] = {}
    for family in FAMILIES:
        preds = np.empty(len(x))
        for k in range(FOLDS):
            test = fold == k
            if test.all() or not test.any():
                preds[test] = y.mean()
                continue
            bx, by = _fit_family(x[~test], y[~test], family)
            preds[test] = np.interp(x[test], bx, by)
        out[family] = ece(preds, y)
    return out


def fit(
    strategy: str,
    samples: int,
    raw: Sequence[float],
    correct: Sequence[bool],
    temperature: float | None = None,
    family: str | None = None,
) -> CalibrationMap:
    """The map of correctness on raw confidence: `family`, or (None) the family with the
    lowest cross-validated ECE (`cross_validated`; with under 2 x FOLDS decisions, isotonic)."""
    if len(raw) != len(correct) or not raw:
        raise ValueError("calibration needs as many outcomes as confidences, at least one")
    x = np.asarray(raw, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if family is None:
        if len(x) < 2 * FOLDS:
            family = "isotonic"
        else:
            scores = cross_validated(x, y)
            family = min(FAMILIES, key=lambda f: (scores[f], FAMILIES.index(f)))
    xs, ys = _fit_family(x, y, family)
    return CalibrationMap(strategy, samples, xs, ys, len(x), temperature, family)


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.0, abs_tol=1e-6)


@dataclass(frozen=True)
class Calibration:
    """The maps of a calibration file, looked up by strategy and sample budget."""

    maps: tuple[CalibrationMap, ...]
    source: str = ""

    def at(self, key: str, samples: int) -> CalibrationMap | None:
        """The first map for this variant and budget (one file from one eval: one each)."""
        return next((m for m in self.maps if m.strategy == key and m.samples == samples), None)

    def lookup(
        self, key: str, samples: int, temperature: float | None
    ) -> tuple[CalibrationMap | None, str]:
        """The map fitted for exactly this variant (`key`: the strategy and how it ran, e.g.
        `majority_vote+beta`), budget and temperature, and what the response's
        `notes.calibration` says: which map, or why the confidence stays raw. A map is never
        borrowed from another variant, budget or temperature: those confidences are
        distributed differently."""
        own = [m for m in self.maps if m.strategy == key]
        if not own:
            return None, f"no map for {key} in the file: raw confidence"
        at_n = [m for m in own if m.samples == samples]
        if not at_n:
            fitted = ", ".join(str(n) for n in sorted({m.samples for m in own}))
            return None, f"{key} maps are fitted at N = {fitted}, not {samples}: raw confidence"
        if temperature is not None:
            same = [
                m for m in at_n if m.temperature is not None and _same(m.temperature, temperature)
            ]
            if same:
                m = same[0]
                return m, f"{key}@{samples}, temperature {m.temperature:g}"
        unknown = [m for m in at_n if m.temperature is None]
        if unknown:
            return unknown[0], f"{key}@{samples} (its temperature is not recorded)"
        fitted = ", ".join(f"{m.temperature:g}" for m in at_n if m.temperature is not None)
        said = "" if temperature is None else f", not {temperature:g}"
        return None, f"{key}@{samples} is fitted at temperature {fitted}{said}: raw confidence"

    def save(self, path: Path) -> None:
        body = {"version": VERSION, "maps": [asdict(m) for m in self.maps]}
        path.write_text(json.dumps(body, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a file written by `ponder eval --calibrate`; ValueError names what is wrong."""
        try:
            body: Any = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read calibration file {path}: {exc}") from exc
        if not isinstance(body, dict) or body.get("version") not in READS:
            raise ValueError(f"{path} is not a version-{VERSION} Ponder calibration file")
        maps = []
        for m in body.get("maps", []):
            cal = CalibrationMap(
                str(m["strategy"]),
                int(m["samples"]),
                [float(v) for v in m["x"]],
                [float(v) for v in m["y"]],
                int(m.get("fitted_on", 0)),
                None if m.get("temperature") is None else float(m["temperature"]),
                str(m.get("method", "isotonic")),
            )
            if not cal.x or len(cal.x) != len(cal.y) or any(np.diff(cal.x) < 0):
                raise ValueError(f"{path}: map {cal.strategy}@{cal.samples} is malformed")
            if any(np.diff(cal.y) < -1e-12) or not all(0.0 <= v <= 1.0 for v in cal.y):
                raise ValueError(f"{path}: map {cal.strategy}@{cal.samples} is not monotone")
            maps.append(cal)
        return cls(tuple(maps), str(path))
