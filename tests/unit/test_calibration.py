"""Calibration maps: isotonic fit, monotone application, the file round trip and its checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ponder.calibration import Calibration, CalibrationMap, fit
from ponder.eval.metrics import ece


def test_fit_is_the_isotonic_regression_by_hand() -> None:
    # raw 0.2 -> 1 right of 2, 0.5 -> 0 of 1, 0.9 -> 2 of 2: pooling 0.2 and 0.5 gives 1/3
    m = fit("majority_vote", 8, [0.2, 0.2, 0.5, 0.9, 0.9], [True, False, False, True, True])
    assert m.x == [0.2, 0.5, 0.9]
    assert m.y == pytest.approx([1 / 3, 1 / 3, 1.0])
    assert m(0.0) == pytest.approx(1 / 3) and m(1.0) == 1.0  # clamped at the ends
    assert m(0.7) == pytest.approx(1 / 3 + (0.7 - 0.5) / 0.4 * (2 / 3))


def test_calibration_lowers_ece_on_overconfident_scores() -> None:
    """A strategy that says 0.9 and is right half the time: after calibration its ECE on
    fresh data of the same kind falls from ~0.4 to ~0."""
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.8, 1.0, 4000)
    right = rng.random(4000) < raw - 0.4
    m = fit("rpc", 4, raw[:2000].tolist(), right[:2000].tolist())
    held_raw, held_right = raw[2000:], right[2000:]
    calibrated = [m(float(c)) for c in held_raw]
    assert ece(held_raw, held_right) > 0.35
    assert ece(calibrated, held_right) < 0.05
    assert all(b >= a - 1e-12 for a, b in zip(m.y, m.y[1:], strict=False))


def test_lookup_takes_the_closest_budget() -> None:
    maps = tuple(fit("majority_vote", n, [0.5, 1.0], [False, True]) for n in (1, 4, 16))
    cal = Calibration(maps)
    assert cal.find("majority_vote", 5).samples == 4  # type: ignore[union-attr]
    assert cal.find("majority_vote", 12).samples == 16  # type: ignore[union-attr]
    assert cal.find("rpc", 4) is None


def test_file_round_trip_and_refusals(tmp_path: Path) -> None:
    cal = Calibration((fit("self_certainty", 8, [0.1, 0.6, 0.9], [False, True, True]),))
    path = tmp_path / "calibration.json"
    cal.save(path)
    back = Calibration.load(path)
    assert back.maps == cal.maps and back.source == str(path)
    bad = json.loads(path.read_text())
    bad["maps"][0]["y"] = [0.9, 0.1, 0.5]
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="not monotone"):
        Calibration.load(path)
    path.write_text('{"version": 99}')
    with pytest.raises(ValueError, match="version-1"):
        Calibration.load(path)
    with pytest.raises(ValueError, match="cannot read"):
        Calibration.load(tmp_path / "missing.json")
    assert isinstance(back.maps[0], CalibrationMap)
