"""Issue 29 item 1: request traces over OTLP/HTTP. The test starts an OTLP/HTTP receiver (a
plain HTTP server that decodes the protobuf `ExportTraceServiceRequest`) and a Ponder server
pointed at it with the standard OTEL_* variables, then checks each request's span tree: the
caller's `traceparent` continued, the plan / run / engine / select / response spans and
their attributes, each engine call's phase, and no prompt or completion text."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ..conftest import Server, free_port, start_server, stop_server

SECRET = "Zanzibarian"
Q = [{"role": "user", "content": f"{SECRET} Tom has 3 apples and buys 5 more. How many now?"}]


class Receiver:
    """OTLP/HTTP traces receiver: every span it is sent, as plain dicts."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.port = free_port()
        spans, lock = self.spans, threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                with lock:
                    for rs in req.resource_spans:
                        service = {a.key: a.value.string_value for a in rs.resource.attributes}.get(
                            "service.name"
                        )
                        for ss in rs.scope_spans:
                            for s in ss.spans:
                                spans.append(_span(s, service))
                out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id: str, until: str = "ponder.response", timeout: float = 60) -> list:
        """The spans of one trace, once its `until` span has arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [s for s in list(self.spans) if s["trace_id"] == trace_id]
            names = {s["name"] for s in got}
            if until in names and any(s["kind"] == 2 for s in got):  # the server span last
                return got
            time.sleep(0.1)
        raise AssertionError(f"trace {trace_id} incomplete: {[s['name'] for s in got]}")


def _span(s: Any, service: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for a in s.attributes:
        v = a.value
        attrs[a.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return {
        "trace_id": s.trace_id.hex(),
        "id": s.span_id.hex(),
        "parent": s.parent_span_id.hex(),
        "name": s.name,
        "kind": s.kind,
        "attrs": attrs,
        "start": s.start_time_unix_nano,
        "end": s.end_time_unix_nano,
        "service": service,
    }


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Server]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "ponder-under-test",
    }
    srv = start_server(Path(tmp_path_factory.mktemp("traced")), env)
    yield srv
    stop_server(srv)


def ask(server: Server, trace_id: str, ponder: dict[str, Any], **kw: Any) -> dict:
    parent = "00f067aa0ba902b7"
    body = {"model": "smollm2", "messages": Q, "max_tokens": 24, "seed": 3, "ponder": ponder, **kw}
    headers = {"traceparent": f"00-{trace_id}-{parent}-01"}
    r = httpx.post(
        f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=600
    )
    assert r.status_code == 200, r.text
    return r.json()


def children(spans: list[dict], parent: dict, name: str) -> list[dict]:
    return [s for s in spans if s["parent"] == parent["id"] and s["name"] == name]


def below(spans: list[dict], root: dict, name: str) -> list[dict]:
    """The spans named `name` anywhere under `root` (a framework's spans may sit between)."""
    by_id = {s["id"]: s for s in spans}
    out = []
    for s in spans:
        p = by_id.get(s["parent"])
        while p is not None and p is not root:
            p = by_id.get(p["parent"])
        if p is root and s["name"] == name:
            out.append(s)
    return out


def test_a_request_is_one_trace_that_continues_the_callers(
    traced: Server, receiver: Receiver
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    out = ask(traced, trace_id, {"strategy": "majority_vote", "samples": 4})
    spans = receiver.trace(trace_id)
    roots = [s for s in spans if s["kind"] == 2]  # SERVER
    assert len(roots) == 1, json.dumps(
        [(s["name"], s["kind"], s["parent"], s["id"], s["attrs"]) for s in spans]
    )
    assert "ponder.strategy" in roots[0]["attrs"], json.dumps(
        [(s["name"], s["kind"], s["parent"], s["id"], s["attrs"]) for s in spans]
    )
    (root,) = roots
    assert root["parent"] == "00f067aa0ba902b7"  # the caller's span
    assert root["name"] == "POST /v1/chat/completions" and root["service"] == "ponder-under-test"
    assert root["attrs"]["http.response.status_code"] == 200
    assert root["attrs"]["ponder.strategy"] == "majority_vote"
    (plan,) = below(spans, root, "ponder.plan")
    (run,) = below(spans, root, "ponder.run")
    (response,) = below(spans, root, "ponder.response")
    assert plan["end"] <= run["start"] and run["end"] <= response["start"] <= root["end"]
    a = run["attrs"]
    assert a["ponder.strategy"] == "majority_vote" and a["ponder.samples_drawn"] == 4
    assert a["ponder.completion_tokens"] == out["usage"]["completion_tokens"]
    assert a["ponder.confidence"] == pytest.approx(out["ponder"]["confidence"])
    assert a["ponder.engine"] == "smollm2"
    (call,) = children(spans, run, "ponder.engine")
    assert call["attrs"]["ponder.phase"] == "samples" and call["attrs"]["ponder.samples"] == 4
    (prefill,) = children(spans, call, "prefill")  # llama.cpp times its prefill
    (decode,) = children(spans, call, "decode")
    assert prefill["attrs"]["ponder.prompt_tokens"] == out["usage"]["prompt_tokens"]
    assert decode["attrs"]["ponder.tokens"] == out["usage"]["completion_tokens"]
    assert call["start"] <= prefill["start"] <= prefill["end"] == decode["start"]
    assert decode["start"] <= decode["end"] <= call["end"] + 1_000_000
    assert children(spans, run, "ponder.select")
    for s in spans:  # no prompt or completion text by default
        for v in s["attrs"].values():
            assert SECRET not in str(v)
            assert out["choices"][0]["message"]["content"] not in str(v) or len(str(v)) < 3


@pytest.mark.parametrize(
    ("ponder", "phase"),
    [
        ({"strategy": "verify", "samples": 2}, "followup"),
        (
            {"strategy": "beam", "samples": 2, "beam": {"delimiter": "\n", "max_steps": 2}},
            "search.step",
        ),
        ({"strategy": "cntp"}, "cntp"),
        ({"strategy": "majority_vote", "samples": 4, "adaptive": {"wave": 2}}, "wave"),
    ],
)
def test_each_engine_call_says_its_phase(
    traced: Server, receiver: Receiver, ponder: dict, phase: str
) -> None:
    trace_id = f"{abs(hash(json.dumps(ponder))) % (1 << 64):016x}" + "a" * 16
    ask(traced, trace_id, ponder)
    spans = receiver.trace(trace_id)
    (run,) = [s for s in spans if s["name"] == "ponder.run"]
    calls = [s for s in spans if s["name"] == "ponder.engine"]
    assert calls and any(c["attrs"]["ponder.phase"] == phase for c in calls)
    ids = {s["id"] for s in spans}
    assert all(c["parent"] in ids for c in calls)  # inside the request's tree
    assert run["attrs"]["ponder.strategy"] == ponder["strategy"]


def test_a_streamed_request_is_traced_too(traced: Server, receiver: Receiver) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    body = {"model": "smollm2", "messages": Q, "max_tokens": 8, "stream": True}
    headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    with httpx.stream(
        "POST", f"{traced.base_url}/v1/chat/completions", json=body, headers=headers, timeout=300
    ) as r:
        assert r.status_code == 200
        list(r.iter_lines())
    spans = receiver.trace(trace_id, until="ponder.run")
    (root,) = [s for s in spans if s["kind"] == 2]
    (run,) = [s for s in spans if s["name"] == "ponder.run"]
    assert root["parent"] == "b7ad6b7169203331" and run["attrs"]["ponder.strategy"] == "none"
