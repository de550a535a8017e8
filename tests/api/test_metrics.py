"""/metrics after real requests on the llama.cpp engine: counters and histograms move."""

from __future__ import annotations

import contextlib

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Server


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_move_after_requests(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
    before = scrape(server)
    q = [{"role": "user", "content": "What is 1 + 1?"}]
    client.chat.completions.create(model="smollm2+majority_vote@3", messages=q, max_tokens=12)
    client.chat.completions.create(model="smollm2", messages=q, max_tokens=4)
    with contextlib.suppress(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=q)
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("ponder_requests_total", strategy="majority_vote", status="200") == 1
    assert delta("ponder_requests_total", strategy="none", status="200") == 1
    assert delta("ponder_requests_total", strategy="unplanned", status="404") == 1
    assert delta("ponder_samples_per_request_sum", strategy="majority_vote") == 3
    assert delta("ponder_confidence_count", strategy="majority_vote") == 1
    assert delta("ponder_winner_vote_share_count", strategy="majority_vote") == 1
    assert delta("ponder_tokens_per_request_count", strategy="none", kind="completion") == 1
    assert delta("ponder_phase_seconds_count", strategy="majority_vote", phase="generate") == 1
    assert delta("ponder_request_seconds_sum", strategy="majority_vote") > 0
    assert ("ponder_engine_in_flight", ()) in after and ("ponder_engine_queue_depth", ()) in after
