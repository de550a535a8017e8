"""Request traces with OpenTelemetry (docs/observability.md): off unless the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, then exported
over OTLP/HTTP by the SDK's batch processor, which reads every other `OTEL_*` variable
itself (headers, timeouts, service name, sampler, batch delays).

One trace per request: the server span (`POST /v1/chat/completions`, ..., continuing a
client's W3C `traceparent`), then `ponder.plan` (rendering, tokenizing, checks), `ponder.run`
(the strategy, with its outcome as attributes), one `ponder.engine` span per engine call (its
`ponder.phase` says what the call was for: samples, an adaptive wave, CNTP, a follow-up or
verification, a search step), each with `queue`, `prefill` and `decode` children timed by
the engine (`generate` where an engine does not time its prefill), `ponder.select`, and
`ponder.response`. No prompt or completion text is recorded unless
PONDER_TRACE_CONTENT=true (then the answer and the chosen text, cut).

When tracing is off every call here is OpenTelemetry's no-op: no span is made, nothing is
recorded, nothing leaves the process.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .types import PHASE, Engine, Generation, SamplingParams, Session, StreamDelta

_TRACER = trace.get_tracer("ponder")
_STATE = {"on": False, "content": False}
CONTENT_CHARS = 256
"""Characters of text a span may carry with PONDER_TRACE_CONTENT=true."""


def setup(content: bool = False) -> bool:
    """Install the SDK's tracer provider with the OTLP/HTTP exporter when an OTLP endpoint is
    configured by the standard variables (and OTEL_SDK_DISABLED is not true). Returns
    whether tracing is on."""
    _STATE["content"] = content
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if not endpoint or disabled or _STATE["on"]:
        return _STATE["on"]
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": "ponder"}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    global _TRACER
    _TRACER = trace.get_tracer("ponder")
    _STATE["on"] = True
    return True


def shutdown() -> None:
    """Flush and stop the exporter (the server's shutdown)."""
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def enabled() -> bool:
    return _STATE["on"]


def content() -> bool:
    return _STATE["content"]


def clip(text: str) -> str:
    return text[:CONTENT_CHARS]


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A span around a block (an error sets its status and is recorded)."""
    with _TRACER.start_as_current_span(name, attributes=_clean(attributes)) as s:
        yield s


@contextlib.contextmanager
def server_span(name: str, headers: Mapping[str, str], **attributes: Any) -> Iterator[Span]:
    """The request's span, continuing the caller's trace (W3C `traceparent`/`tracestate`);
    under an outer instrumentation's span (an ASGI middleware of opentelemetry-instrument),
    a child of that span instead."""
    outer = trace.get_current_span().is_recording()
    parent = propagate.extract(dict(headers)) if _STATE["on"] and not outer else None
    with _TRACER.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=_clean(attributes)
    ) as s:
        yield s


def timed(name: str, seconds: float, end_ns: int | None = None, **attributes: Any) -> None:
    """A span for work that already happened, `seconds` long, ending at `end_ns` (now)."""
    if not _STATE["on"]:
        return
    end = end_ns or time.time_ns()
    s = _TRACER.start_span(
        name, start_time=end - int(max(seconds, 0.0) * 1e9), attributes=_clean(attributes)
    )
    s.end(end_time=end)


def set_attributes(s: Span, **attributes: Any) -> None:
    if s.is_recording():
        s.set_attributes(_clean(attributes))


def failed(s: Span, exc: BaseException) -> None:
    if s.is_recording():
        s.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: None dropped, names under `ponder.`."""
    out: dict[str, Any] = {}
    for k, v in attributes.items():
        if v is None:
            continue
        key = k if "." in k else f"ponder.{k}"
        out[key] = v if isinstance(v, str | bool | int | float) else str(v)
    return out


# ---------------------------------------------------------------- engine calls


def _call_span(kind: str, params: SamplingParams, samples: int, prompt_tokens: int) -> Any:
    return _TRACER.start_as_current_span(
        "ponder.engine",
        attributes=_clean(
            {
                "phase": PHASE.get(),
                "call": kind,
                "samples": samples,
                "prompt_tokens": prompt_tokens,
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
            }
        ),
    )


def _record(s: Span, gen: Generation) -> None:
    """The call's outcome, and its queue and generate times as child spans."""
    if not s.is_recording():
        return
    s.set_attributes(
        {
            "ponder.completion_tokens": gen.completion_tokens,
            "ponder.samples_returned": len(gen.samples),
        }
    )
    end = time.time_ns()
    gen_ns = int(gen.generate_s * 1e9)
    start = end - gen_ns
    if gen.queue_s > 0:
        q = _TRACER.start_span("queue", start_time=start - int(gen.queue_s * 1e9))
        q.end(end_time=start)
    if 0 < gen.prefill_s <= gen.generate_s:  # the engine timed its prefill (llama.cpp)
        filled = start + int(gen.prefill_s * 1e9)
        p = _TRACER.start_span("prefill", start_time=start)
        p.set_attribute("ponder.prompt_tokens", gen.prompt_tokens)
        p.end(end_time=filled)
        start = filled
    g = _TRACER.start_span("decode" if start > end - gen_ns else "generate", start_time=start)
    g.set_attribute("ponder.tokens", gen.completion_tokens)
    g.end(end_time=end)


class _TracedSession:
    """A session whose calls are spans."""

    def __init__(self, inner: Session) -> None:
        self._inner = inner

    async def sample(
        self, prompt_ids: list[int], params: SamplingParams, samples: int, *a: Any, **k: Any
    ) -> Generation:
        with _call_span("sample", params, samples, len(prompt_ids)) as s:
            gen = await self._inner.sample(prompt_ids, params, samples, *a, **k)
            _record(s, gen)
            return gen

    async def sample_many(
        self, requests: list[tuple[list[int], SamplingParams, int]]
    ) -> list[Generation]:
        params = requests[0][1] if requests else SamplingParams()
        total = sum(n for _, _, n in requests)
        with _call_span("sample_many", params, total, sum(len(p) for p, _, _ in requests)) as s:
            gens = await self._inner.sample_many(requests)
            if s.is_recording():
                s.set_attribute("ponder.prompts", len(requests))
                merged = Generation(
                    [x for g in gens for x in g.samples],
                    sum(g.prompt_tokens for g in gens),
                    max((g.queue_s for g in gens), default=0.0),
                    max((g.generate_s for g in gens), default=0.0),
                    sum(g.unused_tokens for g in gens),
                )
                _record(s, merged)
            return gens


class TracedEngine(_TracedSession):
    """The engine with each generating call as a `ponder.engine` span (everything else is
    the engine's own). Used only while tracing is on."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)  # type: ignore[arg-type]
        self._engine = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Session]:
        async with self._engine.session() as inner:
            yield _TracedSession(inner)

    def session(self) -> AbstractAsyncContextManager[Session]:
        return self._session()

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[StreamDelta]:
        return self._engine.stream(prompt_ids, params)  # traced once done (runner)


def traced(engine: Engine) -> Engine:
    """`engine`, with its calls traced when tracing is on (else itself)."""
    return TracedEngine(engine) if _STATE["on"] else engine
