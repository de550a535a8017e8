"""Tracing overhead (issue 29): the same seeded majority-vote@8 requests on the embedded
SmolLM2 in process, in rounds with tracing off and on, interleaved (on: every span exported
over OTLP/HTTP by the SDK's batch processor to a local receiver that accepts and drops
them; off: OpenTelemetry's no-op tracer and the engine unwrapped, as when no endpoint is
set). Prints the median of `--repeats` rounds of `--requests` requests each, and the
difference; not a test.

    python benchmarks/bench_tracing.py [--repeats 5] [--requests 4]
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import os
import socket
import statistics
import threading
import time

from opentelemetry import trace

from ponder import runner, tracing
from ponder.engines.llamacpp import LlamaCppEngine
from ponder.strategies import Job
from ponder.types import SamplingParams

PROMPTS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "What is 17 times 3?",
    "A train goes 60 km in one hour. How far does it go in three hours?",
    "Name three colours.",
]


class _Drop(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def receiver() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Drop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return port


async def round_s(engine: LlamaCppEngine, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        ids = engine.render_chat([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}])
        params = SamplingParams(max_tokens=48, temperature=0.7, seed=i)
        await runner.run(Job("majority_vote", ids, params, 8), engine)
    return time.perf_counter() - t0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--requests", type=int, default=4)
    args = ap.parse_args()
    engine = LlamaCppEngine(None, "smollm2", n_ctx=8192, max_samples=16)
    await engine.start()
    try:
        await round_s(engine, 1)  # warm-up
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver()}"
        assert tracing.setup()
        real = tracing._TRACER
        off: list[float] = []
        on: list[float] = []
        for _ in range(args.repeats):  # interleaved, so background load hits both alike
            tracing._TRACER, tracing._STATE["on"] = trace.NoOpTracer(), False
            off.append(await round_s(engine, args.requests))
            tracing._TRACER, tracing._STATE["on"] = real, True
            on.append(await round_s(engine, args.requests))
        tracing.shutdown()
    finally:
        await engine.close()
    a, b = statistics.median(off), statistics.median(on)
    print(f"{args.requests} majority_vote@8 requests per round, median of {args.repeats} rounds")
    print(f"tracing off: {a:.3f} s   on: {b:.3f} s   overhead: {100 * (b - a) / a:+.2f}%")
    print("rounds off:", " ".join(f"{x:.3f}" for x in off))
    print("rounds on: ", " ".join(f"{x:.3f}" for x in on))


if __name__ == "__main__":
    asyncio.run(main())
