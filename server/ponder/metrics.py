"""Prometheus metrics (prometheus-client, default registry).

The default registry is used on purpose: an in-process vLLM engine registers its own `vllm:*`
metrics there, so `/metrics` shows both. Metric objects are module-level singletons.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = [
    "CONTENT_TYPE_LATEST",
    "observe_outcome",
    "observe_request",
    "render",
    "watch_batching",
    "watch_engine",
]

_LATENCY = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128)
_TOKENS = (16, 64, 256, 1024, 4096, 16384, 65536)
_RATIO = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

REQUESTS = Counter(
    "ponder_requests", "HTTP requests to /v1 routes by strategy and status", ["strategy", "status"]
)
REQUEST_SECONDS = Histogram(
    "ponder_request_seconds", "Wall time of /v1 requests", ["strategy"], buckets=_LATENCY
)
PHASE_SECONDS = Histogram(
    "ponder_phase_seconds",
    "Time per phase of a request: queue (waiting for the engine), generate, select",
    ["strategy", "phase"],
    buckets=_LATENCY,
)
SAMPLES = Histogram(
    "ponder_samples_per_request", "Samples generated per request", ["strategy"], buckets=_COUNTS
)
TOKENS = Histogram(
    "ponder_tokens_per_request",
    "Tokens per request (kind: prompt, completion = every generated token)",
    ["strategy", "kind"],
    buckets=_TOKENS,
)
CONFIDENCE = Histogram(
    "ponder_confidence", "Reported confidence of the chosen answer", ["strategy"], buckets=_RATIO
)
VOTE_SHARE = Histogram(
    "ponder_winner_vote_share",
    "Share of generated samples whose answer is the chosen one (vote agreement)",
    ["strategy"],
    buckets=_RATIO,
)
IN_FLIGHT = Gauge("ponder_engine_in_flight", "Requests inside the engine (running or queued)")
QUEUE_DEPTH = Gauge("ponder_engine_queue_depth", "Requests waiting for the engine")


def observe_request(strategy: str, status: int, seconds: float) -> None:
    REQUESTS.labels(strategy, str(status)).inc()
    REQUEST_SECONDS.labels(strategy).observe(seconds)


def observe_outcome(
    strategy: str,
    *,
    queue_s: float,
    generate_s: float,
    select_s: float,
    samples: int,
    prompt_tokens: int,
    completion_tokens: int,
    confidence: float | None,
    winner_votes: int | None,
) -> None:
    """Record what one finished request did."""
    for phase, value in (("queue", queue_s), ("generate", generate_s), ("select", select_s)):
        PHASE_SECONDS.labels(strategy, phase).observe(value)
    SAMPLES.labels(strategy).observe(samples)
    TOKENS.labels(strategy, "prompt").observe(prompt_tokens)
    TOKENS.labels(strategy, "completion").observe(completion_tokens)
    if confidence is not None:
        CONFIDENCE.labels(strategy).observe(confidence)
    if winner_votes is not None and samples:
        VOTE_SHARE.labels(strategy).observe(winner_votes / samples)


def watch_engine(in_flight: Callable[[], float], queue_depth: Callable[[], float]) -> None:
    """Read the engine's gauges at scrape time."""
    IN_FLIGHT.set_function(in_flight)
    QUEUE_DEPTH.set_function(queue_depth)


_BATCHING: list[Callable[[], Mapping[str, Any]]] = []
_BATCH_COUNTERS = {
    "steps": ("ponder_engine_steps", "Decode steps of the engine's batcher"),
    "sequences": (
        "ponder_engine_step_sequences",
        "Sequences decoded, summed over steps (batch occupancy = its rate / the steps' rate)",
    ),
    "shared_steps": (
        "ponder_engine_shared_steps",
        "Decode steps that carried sequences of two or more requests",
    ),
    "deferred": (
        "ponder_engine_deferred_rows",
        "Rows a step left for a later one: a request's live samples over its share of the engine",
    ),
    "generated": (
        "ponder_engine_generated_tokens",
        "Tokens sampled by the engine (tokens/s = its rate)",
    ),
    "prefilled": ("ponder_engine_prefill_tokens", "Prompt tokens prefilled by the engine"),
    "decode_s": ("ponder_engine_decode_seconds", "Seconds inside the model's decode calls"),
    "grammar_s": (
        "ponder_engine_grammar_seconds",
        "Seconds computing structured outputs' token masks (llguidance), inside the steps",
    ),
    "busy_s": (
        "ponder_engine_busy_seconds",
        "Seconds of whole decode steps (the model's decode + Ponder's host work)",
    ),
}
"""Counter families (exposed with `_total`) read from the engine's batcher counters."""


class _BatchingCollector:
    """Reads the engine's batcher counters at scrape time (engines that batch across
    requests expose `counters`)."""

    def collect(self) -> Iterator[Any]:
        if not _BATCHING:
            return
        values = _BATCHING[-1]()
        for key, (name, doc) in _BATCH_COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=float(values.get(key, 0)))
        yield GaugeMetricFamily(
            "ponder_engine_batch_sequences",
            "Sequences in the engine's last decode step",
            value=float(values.get("last_batch", 0)),
        )


_COLLECTOR = _BatchingCollector()
REGISTRY.register(_COLLECTOR)


def watch_batching(read: Callable[[], Mapping[str, Any]]) -> None:
    """Publish an engine's batching counters (steps, sequences, tokens, seconds)."""
    _BATCHING.append(read)
    del _BATCHING[:-1]


def render() -> bytes:
    return generate_latest()
