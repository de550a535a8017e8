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


def test_a_map_is_used_only_for_what_it_was_fitted_on() -> None:
    """Issue 30: the variant, the budget and the temperature must all match; anything else
    stays raw and the note says why (no map is borrowed)."""
    maps = tuple(fit("majority_vote", n, [0.5, 1.0], [False, True], 0.7) for n in (1, 4, 16))
    cal = Calibration(
        (
            *maps,
            fit("majority_vote+beta", 16, [0.5, 1.0], [False, True], 0.7),
            fit("rpc", 8, [0.5, 1.0], [False, True]),  # temperature not recorded
        )
    )
    m, said = cal.lookup("majority_vote", 4, 0.7)
    assert m is not None and m.samples == 4 and said == "majority_vote@4, temperature 0.7"
    m, said = cal.lookup("majority_vote", 5, 0.7)
    assert (
        m is None and said == "majority_vote maps are fitted at N = 1, 4, 16, not 5: raw confidence"
    )
    m, said = cal.lookup("majority_vote", 16, 1.0)
    assert m is None and "fitted at temperature 0.7, not 1: raw confidence" in said
    m, said = cal.lookup("majority_vote+beta", 16, 0.7)
    assert m is not None and m.strategy == "majority_vote+beta"
    m, said = cal.lookup("majority_vote+window", 16, 0.7)
    assert m is None and said == "no map for majority_vote+window in the file: raw confidence"
    m, said = cal.lookup("rpc", 8, 0.9)
    assert m is not None and said == "rpc@8 (its temperature is not recorded)"
    assert cal.at("majority_vote", 16) is maps[2]


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
    with pytest.raises(ValueError, match="version-2"):
        Calibration.load(path)
    with pytest.raises(ValueError, match="cannot read"):
        Calibration.load(tmp_path / "missing.json")
    assert isinstance(back.maps[0], CalibrationMap)


def test_the_family_with_the_lowest_cross_validated_ece_is_kept() -> None:
    """Issue 30: the family kept is the one with the lowest cross-validated ECE, and on
    decisions whose accuracy is a smooth curve of the raw confidence (Platt's own logistic
    in logit(c)) the map is close to that curve."""
    from scipy.special import expit, logit

    from ponder.calibration import cross_validated

    rng = np.random.default_rng(3)
    raw = rng.uniform(0.05, 0.95, 2000)
    truth = expit(0.6 * logit(raw) - 0.4)
    right = rng.random(2000) < truth
    scores = cross_validated(raw, right.astype(np.float64))
    assert set(scores) == {"platt", "beta", "isotonic"}
    m = fit("majority_vote", 8, raw.tolist(), right.tolist(), 0.7)
    assert m.method == min(scores, key=scores.__getitem__)
    assert m.temperature == 0.7
    grid = np.linspace(0.1, 0.9, 9)
    assert (
        np.max(np.abs(np.array([m(float(g)) for g in grid]) - expit(0.6 * logit(grid) - 0.4)))
        < 0.06  # 2,000 decisions: ten isotonic steps of 200 (or a smooth curve) within 0.06
    )
    assert all(b >= a - 1e-12 for a, b in zip(m.y, m.y[1:], strict=False))


def test_isotonic_steps_hold_at_least_min_bin_decisions() -> None:
    from ponder.calibration import MIN_BIN

    raw = [i / 100 for i in range(100)]
    right = [i % 3 == 0 for i in range(100)]
    m = fit("rpc", 4, raw, right, family="isotonic")
    assert len(m.x) <= 100 // MIN_BIN  # one breakpoint per bin of >= MIN_BIN decisions
    many = fit(
        "rpc",
        4,
        [i / 1000 for i in range(1000)],
        [i % 3 == 0 for i in range(1000)],
        family="isotonic",
    )
    assert len(many.x) <= 10  # and at most about ten steps however many decisions


def test_the_noise_floor_is_what_a_perfect_map_scores() -> None:
    from ponder.eval.summary import noise_floor

    rng = np.random.default_rng(5)
    conf = rng.uniform(0.3, 1.0, 200)
    floor, high = noise_floor([[c] for c in conf.tolist()])
    assert 0.0 < floor < high < 0.15
    # a perfectly calibrated outcome set scores about the floor; a miscalibrated one far more
    right = (rng.random(200) < conf).astype(float)
    assert ece(conf, right) < high + 0.03
    assert ece(np.minimum(conf + 0.3, 1.0), right) > high
    bigger, _ = noise_floor([[c] for c in np.tile(conf, 10).tolist()])
    assert bigger < floor  # more problems, less noise
    same, _ = noise_floor([[c] * 8 for c in conf.tolist()])
    assert same == pytest.approx(floor, abs=0.01)  # 8 decisions of one problem: no more evidence
