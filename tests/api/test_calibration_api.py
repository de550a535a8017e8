"""PONDER_CALIBRATION through a real server: the calibrated confidence, the raw one beside it,
which map was used; a strategy without a map stays raw and says so; a bad file stops the
server with a clear message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ponder.calibration import Calibration, CalibrationMap

from ..conftest import Server, start_server, stop_server

Q = [{"role": "user", "content": "What is 3 + 4? Answer with a number."}]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("calibrated")
    path = tmp / "calibration.json"
    Calibration(
        (
            CalibrationMap("majority_vote", 4, [0.0, 1.0], [0.1, 0.3], 100),
            CalibrationMap("majority_vote+beta", 4, [0.0, 1.0], [0.5, 0.6], 100, 0.7),
            CalibrationMap("self_certainty", 4, [0.0, 1.0], [0.2, 0.4], 100, 0.7),
        )
    ).save(path)
    srv = start_server(tmp, {"PONDER_CALIBRATION": str(path), "PONDER_MAX_SAMPLES": "8"})
    yield srv
    stop_server(srv)


def ask(server: Server, strategy: str, **kw: Any) -> dict:
    extra = kw.pop("ponder", {})
    body = {
        "model": "smollm2",
        "messages": Q,
        "max_tokens": 16,
        "seed": 3,
        "ponder": {"strategy": strategy, "samples": 4, "answer": {"format": "number"}, **extra},
        **kw,
    }
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return dict(r.json()["ponder"])


def test_the_calibrated_confidence_and_the_raw_one(calibrated: Server) -> None:
    p = ask(calibrated, "majority_vote")
    raw = p["confidence_raw"]
    assert 0.0 <= raw <= 1.0
    assert p["confidence"] == pytest.approx(0.1 + 0.2 * raw)
    assert p["notes"]["calibration"] == "majority_vote@4 (its temperature is not recorded)"


def test_a_strategy_without_a_map_stays_raw_and_says_so(calibrated: Server) -> None:
    p = ask(calibrated, "rpc")
    assert "confidence_raw" not in p
    assert p["notes"]["calibration"] == "no map for rpc in the file: raw confidence"


def test_each_variant_and_temperature_gets_its_own_map_or_none(calibrated: Server) -> None:
    """Issue 30: adaptive stopping uses the `+beta` map, not the fixed-N one; a request at
    another temperature than the map's stays raw and says so."""
    p = ask(calibrated, "majority_vote", temperature=0.7, ponder={"adaptive": {"wave": 2}})
    assert p["notes"]["calibration"] == "majority_vote+beta@4, temperature 0.7"
    assert p["confidence"] == pytest.approx(0.5 + 0.1 * p["confidence_raw"])
    p = ask(calibrated, "self_certainty", temperature=0.9)
    assert "confidence_raw" not in p
    said = "self_certainty@4 is fitted at temperature 0.7, not 0.9: raw confidence"
    assert p["notes"]["calibration"] == said
    p = ask(calibrated, "self_certainty", temperature=0.7)
    assert p["confidence"] == pytest.approx(0.2 + 0.2 * p["confidence_raw"])


def test_an_unreadable_calibration_file_stops_the_server(tmp_path: Path) -> None:
    bad = tmp_path / "calibration.json"
    bad.write_text('{"version": 1, "maps": [{"strategy": "rpc", "samples": 4, "x": [0, 1], '
                   '"y": [0.9, 0.1]}]}')  # fmt: skip
    with pytest.raises(RuntimeError, match="not monotone"):
        start_server(tmp_path, {"PONDER_CALIBRATION": str(bad)}, ready_timeout_s=60)
