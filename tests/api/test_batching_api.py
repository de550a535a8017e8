"""Continuous batching through a live server: concurrent requests share decode steps (seen in
/metrics), and a request's deadline counts from its admission to the engine, not from its
arrival (a request that waits for sequences is not timed out by that wait)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import httpx
import pytest

from ..conftest import Server, start_server, stop_server

COUNT = [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]
TIMEOUT_S = 6.0


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One sequence in all (a second request must wait for it), and a 6 s deadline."""
    srv = start_server(
        tmp_path_factory.mktemp("batching"),
        {"PONDER_MAX_SAMPLES": "1", "PONDER_REQUEST_TIMEOUT_S": str(TIMEOUT_S)},
    )
    yield srv
    stop_server(srv)


def chat(srv: Server, samples: int, max_tokens: int) -> tuple[httpx.Response, float]:
    body = {
        "model": "smollm2",
        "messages": COUNT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ponder": {"strategy": "none" if samples == 1 else "majority_vote", "samples": samples},
    }
    if samples > 1:
        body["temperature"] = 0.2
    t = time.perf_counter()
    r = httpx.post(f"{srv.base_url}/v1/chat/completions", json=body, timeout=120)
    return r, time.perf_counter() - t


def metric(srv: Server, name: str) -> float:
    for line in httpx.get(f"{srv.base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_concurrent_requests_share_steps_in_metrics(server: Server) -> None:
    before = metric(server, "ponder_engine_shared_steps_total")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        codes = [r.status_code for r, _ in pool.map(lambda n: chat(server, n, 24), (1, 2))]
    assert codes == [200, 200]
    assert metric(server, "ponder_engine_shared_steps_total") > before
    assert metric(server, "ponder_engine_generated_tokens_total") > 0
    assert metric(server, "ponder_engine_step_sequences_total") >= metric(
        server, "ponder_engine_steps_total"
    )


def test_the_deadline_counts_from_admission_to_the_engine(small: Server) -> None:
    """A holds the only sequence for ~0.75 of the deadline; B, sent just after, waits for it
    and then runs ~0.75 of it itself: ~1.4 deadlines after its arrival, within its
    deadline from admission. (Each alone fits, so the admission gate lets both in.)"""
    chat(small, 1, 64)
    _, per64 = chat(small, 1, 64)  # seconds for 64 tokens, the gate's pace learned too
    tokens = max(64, int(64 * 0.75 * TIMEOUT_S / per64))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a = pool.submit(chat, small, 1, tokens)
        time.sleep(0.3)
        b = pool.submit(chat, small, 1, tokens)
        (ra, ta), (rb, tb) = a.result(), b.result()
    assert ra.status_code == 200, ra.text
    assert tb > TIMEOUT_S, (ta, tb, rb.text[:300])  # B's wall time from arrival passed it...
    assert rb.status_code == 200, rb.text  # ...but from its admission it did not
    assert rb.json()["usage"]["completion_tokens"] == tokens
