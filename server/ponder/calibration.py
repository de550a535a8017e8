"""Calibrated confidence: a monotone map from a strategy's raw confidence to the accuracy it
had on held-out data, fitted by `ponder eval --calibrate` and applied by the server
(`PONDER_CALIBRATION=path`).

A map is fitted per strategy and sample budget by isotonic regression (scipy's
`isotonic_regression`: the non-decreasing step function closest to the 0/1 outcomes), stored
as its breakpoints, and applied by linear interpolation between them (clamped at the ends),
so a higher raw confidence never maps to a lower calibrated one. Leaf module: numpy, scipy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import isotonic_regression

VERSION = 1


@dataclass(frozen=True)
class CalibrationMap:
    """raw confidence x -> calibrated y, for one strategy at one sample budget."""

    strategy: str
    samples: int
    x: list[float]
    y: list[float]
    fitted_on: int
    """How many (confidence, correct) pairs the map was fitted on."""

    def __call__(self, raw: float) -> float:
        return float(np.interp(raw, self.x, self.y))


def fit(
    strategy: str, samples: int, raw: Sequence[float], correct: Sequence[bool]
) -> CalibrationMap:
    """The isotonic fit of correctness on raw confidence; equal raw values are pooled."""
    if len(raw) != len(correct) or not raw:
        raise ValueError("calibration needs as many outcomes as confidences, at least one")
    order = np.argsort(np.asarray(raw, dtype=np.float64), kind="stable")
    xs = np.asarray(raw, dtype=np.float64)[order]
    ys = np.asarray(correct, dtype=np.float64)[order]
    values, first, counts = np.unique(xs, return_index=True, return_counts=True)
    means = np.add.reduceat(ys, first) / counts
    fitted = isotonic_regression(means, weights=counts.astype(np.float64)).x
    return CalibrationMap(
        strategy, samples, [float(v) for v in values], [float(v) for v in fitted], len(raw)
    )


@dataclass(frozen=True)
class Calibration:
    """The maps of a calibration file, looked up by strategy and sample budget."""

    maps: tuple[CalibrationMap, ...]
    source: str = ""

    def find(self, strategy: str, samples: int) -> CalibrationMap | None:
        """The strategy's map for the budget closest to `samples` (in ratio), or None."""
        own = [m for m in self.maps if m.strategy == strategy]
        if not own:
            return None
        return min(own, key=lambda m: (abs(math.log(m.samples / max(samples, 1))), m.samples))

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
        if not isinstance(body, dict) or body.get("version") != VERSION:
            raise ValueError(f"{path} is not a version-{VERSION} Ponder calibration file")
        maps = []
        for m in body.get("maps", []):
            cal = CalibrationMap(
                str(m["strategy"]),
                int(m["samples"]),
                [float(v) for v in m["x"]],
                [float(v) for v in m["y"]],
                int(m.get("fitted_on", 0)),
            )
            if not cal.x or len(cal.x) != len(cal.y) or any(np.diff(cal.x) < 0):
                raise ValueError(f"{path}: map {cal.strategy}@{cal.samples} is malformed")
            if any(np.diff(cal.y) < -1e-12) or not all(0.0 <= v <= 1.0 for v in cal.y):
                raise ValueError(f"{path}: map {cal.strategy}@{cal.samples} is not monotone")
            maps.append(cal)
        return cls(tuple(maps), str(path))
