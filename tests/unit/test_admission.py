"""The admission rule that uses the engine's measured pace (security.Gate)."""

from __future__ import annotations

import pytest

from ponder.api.errors import ApiError
from ponder.api.security import Gate
from ponder.config import Settings


def test_no_refusal_before_the_pace_is_known() -> None:
    gate = Gate(Settings(request_timeout_s=10))
    permits = [gate.admit("a", 10_000) for _ in range(3)]  # huge, but nothing measured yet
    assert gate.work == 30_000
    for p in permits:
        p.release()
        p.release()  # idempotent
    assert gate.work == 0 and gate.admitted == 0


def test_a_request_that_cannot_finish_in_time_gets_503_with_a_computed_retry_after() -> None:
    gate = Gate(Settings(request_timeout_s=10))
    gate.observe(budget_tokens=1000, seconds=2.0)  # 2 ms per budgeted token
    assert gate.pace == pytest.approx(0.002)
    first = gate.admit("a", 2000)  # 4 s of work
    second = gate.admit("b", 2000)  # 4 s behind 4 s: fits in 10 s
    assert gate.expected_wait() == pytest.approx(8.0)
    with pytest.raises(ApiError) as err:
        gate.admit("c", 1500)  # 8 s ahead + 3 s > 10 s
    assert err.value.status == 503 and err.value.code == "overloaded"
    assert err.value.headers["Retry-After"] == "8"
    assert gate.admitted == 2 and gate.work == 4000  # the refused one holds nothing
    first.release()
    gate.admit("c", 1500).release()  # 4 s ahead + 3 s fits now
    second.release()


def test_pace_is_a_moving_average_and_no_deadline_means_no_refusal() -> None:
    gate = Gate(Settings(request_timeout_s=0))
    gate.observe(100, 1.0)
    gate.observe(100, 2.0)
    assert gate.pace == pytest.approx(0.8 * 0.01 + 0.2 * 0.02)
    gate.admit("a", 10**9)
    gate.admit("b", 10**9)  # no deadline: time never refuses


def test_where_the_engine_reports_admission_the_wait_does_not_count() -> None:
    """llama.cpp's batcher: deadlines count from admission to the engine, so only the
    request's own work must fit its deadline; the queue ahead sets Retry-After only."""
    gate = Gate(Settings(request_timeout_s=10), wait_counts=False)
    gate.observe(budget_tokens=1000, seconds=2.0)
    held = [gate.admit("a", 2000), gate.admit("b", 2000)]  # 8 s of work ahead
    gate.admit("c", 4000).release()  # 8 s of its own: fits its 10 s from admission
    with pytest.raises(ApiError) as err:
        gate.admit("d", 6000)  # 12 s of its own cannot
    assert err.value.status == 503
    for p in held:
        p.release()
