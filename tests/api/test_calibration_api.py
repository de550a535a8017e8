"""PONDER_CALIBRATION through a real server: the calibrated confidence, the raw one beside it,
which map was used; a strategy without a map stays raw and says so; a bad file stops the
server with a clear message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ponder.calibration import Calibration, CalibrationMap

from ..conftest import Server, start_server, stop_server

Q = [{"role": "user", "content": "What is 3 + 4? Answer with a number."}]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("calibrated")
    path = tmp / "calibration.json"
    Calibration((CalibrationMap("majority_vote", 4, [0.0, 1.0], [0.1, 0.3], 100),)).save(path)
    srv = start_server(tmp, {"PONDER_CALIBRATION": str(path), "PONDER_MAX_SAMPLES": "8"})
    yield srv
    stop_server(srv)


def ask(server: Server, strategy: str) -> dict:
    body = {
        "model": "smollm2",
        "messages": Q,
        "max_tokens": 16,
        "seed": 3,
        "ponder": {"strategy": strategy, "samples": 4, "answer": {"format": "number"}},
    }
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return dict(r.json()["ponder"])


def test_the_calibrated_confidence_and_the_raw_one(calibrated: Server) -> None:
    p = ask(calibrated, "majority_vote")
    raw = p["confidence_raw"]
    assert 0.0 <= raw <= 1.0
    assert p["confidence"] == pytest.approx(0.1 + 0.2 * raw)
    assert p["notes"]["calibration"] == "majority_vote@4"


def test_a_strategy_without_a_map_stays_raw_and_says_so(calibrated: Server) -> None:
    p = ask(calibrated, "rpc")
    assert "confidence_raw" not in p
    assert p["notes"]["calibration"] == "none for this strategy in the file"


def test_an_unreadable_calibration_file_stops_the_server(tmp_path: Path) -> None:
    bad = tmp_path / "calibration.json"
    bad.write_text('{"version": 1, "maps": [{"strategy": "rpc", "samples": 4, "x": [0, 1], '
                   '"y": [0.9, 0.1]}]}')  # fmt: skip
    with pytest.raises(RuntimeError, match="not monotone"):
        start_server(tmp_path, {"PONDER_CALIBRATION": str(bad)}, ready_timeout_s=60)
