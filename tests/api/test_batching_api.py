"""Continuous batching through a live server: concurrent requests share decode steps (seen in
/metrics); a request that cannot start before its deadline gets 503, not 504."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import httpx
import pytest

from ponder.api.errors import ApiError
from ponder.api.service import EngineClock, until_done_or_gone
from ponder.engines.llamacpp import LlamaCppEngine
from ponder.types import Generation, SamplingParams

from ..conftest import Server

COUNT = [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]


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


class _Present:
    """The HTTP request of `until_done_or_gone`: a client that stays connected."""

    async def is_disconnected(self) -> bool:
        return False


def test_a_request_that_cannot_start_before_its_deadline_gets_503(engine: LlamaCppEngine) -> None:
    """The deadline counts from arrival, waiting for the engine included. With the engine's
    thread held (another call's progress callback blocks until the test lets it go), a
    request whose deadline passes while it waits never started: 503 with Retry-After, not
    504. Nothing depends on the machine's speed: the pause lasts until the test ends it."""
    prompt = engine.render_chat(COUNT)
    p = SamplingParams(max_tokens=4, temperature=0.0)
    release, entered = threading.Event(), threading.Event()

    def hold(done: int, total: int) -> None:
        entered.set()
        release.wait(60)

    async def go() -> tuple[ApiError, Generation, Generation]:
        held = asyncio.ensure_future(engine.sample(prompt, p, 1, on_progress=hold))
        assert await asyncio.to_thread(entered.wait, 60)
        clock = EngineClock(0.3, reports_admission=True)
        with pytest.raises(ApiError) as err:
            await until_done_or_gone(_Present(), engine.sample(prompt, p, 1), clock)
        release.set()
        first = await held
        after = await engine.sample(prompt, p, 1)  # the engine is healthy after
        return err.value, first, after

    err, first, after = asyncio.run(go())
    assert err.status == 503 and err.code == "overloaded", err.message
    assert int((err.headers or {})["Retry-After"]) >= 1
    assert "could not start" in err.message
    assert first.samples[0].n_tokens == after.samples[0].n_tokens == 4
