"""The client's retry rules (openai-python's) as pure functions."""

from __future__ import annotations

import httpx
import pytest

from ponder_client._client import retry_delay, should_retry


@pytest.mark.parametrize(
    ("status", "headers", "retry"),
    [
        (408, {}, True),
        (409, {}, True),
        (429, {}, True),
        (500, {}, True),
        (502, {}, True),
        (503, {}, True),
        (400, {}, False),
        (401, {}, False),
        (404, {}, False),
        (503, {"x-should-retry": "false"}, False),
        (400, {"x-should-retry": "true"}, True),
    ],
)
def test_should_retry(status: int, headers: dict[str, str], retry: bool) -> None:
    assert should_retry(httpx.Response(status, headers=headers)) is retry


def test_retry_delay_reads_the_servers_hints() -> None:
    assert retry_delay(0, httpx.Headers({"retry-after-ms": "250"})) == pytest.approx(0.25)
    assert retry_delay(0, httpx.Headers({"retry-after": "3"})) == 3.0
    assert 0.375 <= retry_delay(0, httpx.Headers({"retry-after": "600"})) <= 0.5  # over 60 s
    assert 0.375 <= retry_delay(0, None) <= 0.5
    assert 6.0 <= retry_delay(10, None) <= 8.0  # capped at 8 s
