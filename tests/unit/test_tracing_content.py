"""Issue 29 item 1: a trace carries no prompt or completion text unless
PONDER_TRACE_CONTENT=true, and then at most tracing.CONTENT_CHARS of it; spans for work that
already happened end when it did. On an in-memory exporter (no server)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ponder import runner, tracing
from ponder.strategies import Decision, Job
from ponder.types import Generation, Sample, SamplingParams

pytestmark = pytest.mark.unit


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_TRACER", provider.get_tracer("test"))
    monkeypatch.setitem(tracing._STATE, "on", True)
    yield exporter


def outcome(text: str) -> runner.Outcome:
    z = np.zeros(3, dtype=np.float32)
    sample = Sample(0, text, [1, 2, 3], "stop", z, z, z, z)
    job = Job("majority_vote", [1], SamplingParams(), 1)
    decision = Decision("majority_vote", 0, "42", 1.0, [], [0], [None], 0)
    return runner.Outcome(job, Generation([sample], 5, 0.0, 0.1), decision, [0], 0.0, True)


@pytest.mark.parametrize("content", [False, True])
def test_text_only_with_trace_content(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, content: bool
) -> None:
    monkeypatch.setitem(tracing._STATE, "content", content)
    secret = "the secret is 42. " * 40
    with tracing.span("ponder.run") as span:
        runner._trace_outcome(span, outcome(secret))
    (got,) = spans.get_finished_spans()
    attrs = dict(got.attributes or {})
    assert attrs["ponder.samples_drawn"] == 1 and attrs["ponder.completion_tokens"] == 3
    if content:
        assert attrs["ponder.answer"] == "42"
        assert attrs["ponder.text"] == secret[: tracing.CONTENT_CHARS]
    else:
        assert "ponder.answer" not in attrs and "ponder.text" not in attrs
        assert not any("secret" in str(v) for v in attrs.values())


def test_a_timed_span_ends_when_the_work_did(spans: InMemorySpanExporter) -> None:
    tracing.timed("ponder.select", 0.25, end_ns=10_000_000_000, strategy="rpc")
    (got,) = spans.get_finished_spans()
    assert got.end_time == 10_000_000_000 and got.start_time == 9_750_000_000
    assert dict(got.attributes or {}) == {"ponder.strategy": "rpc"}


def test_off_makes_no_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tracing._STATE, "on", False)
    tracing.timed("ponder.select", 1.0)
    engine = object()
    assert tracing.traced(engine) is engine  # type: ignore[arg-type]
