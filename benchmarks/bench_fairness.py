"""A short request behind a large one on the embedded engine, through a real server.

    python benchmarks/bench_fairness.py [--samples 64] [--max-tokens 256] [--repeats 3]
                                        [--server-path DIR]

Starts `ponder serve` (llama.cpp, SmolLM2, PONDER_MAX_SAMPLES = --samples) and prints, as
medians over `--repeats` rounds: a 16-token request alone; the same request sent 1 s after a
majority vote of --samples samples x --max-tokens tokens (its latency and the ratio to alone,
the target of issue 23 is <= 3x); and the large request's own time, alone and with the short
one beside it. `--server-path` runs another checkout's server/ (to measure before/after).
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time

import httpx
from bench_concurrency import free_port, start_server

SHORT = [{"role": "user", "content": "Name a colour."}]
LONG = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]


def start(port: int, samples: int, server_path: str | None) -> subprocess.Popen[bytes]:
    env = {"PONDER_MAX_SAMPLES": str(samples)}
    if server_path:
        env["PYTHONPATH"] = server_path
    return start_server(port, None, env)


async def ask(client: httpx.AsyncClient, body: dict) -> float:
    t = time.perf_counter()
    r = await client.post("/v1/chat/completions", json=body)
    r.raise_for_status()
    return time.perf_counter() - t


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    proc = start(port, args.samples, args.server_path)
    short = {"model": "smollm2", "messages": SHORT, "max_tokens": 16, "seed": 1}
    large = {
        "model": "smollm2",
        "messages": LONG,
        "max_tokens": args.max_tokens,
        "seed": 2,
        "temperature": 0.8,
        "ponder": {"strategy": "majority_vote", "samples": args.samples},
    }
    alone, behind, large_alone, large_shared = [], [], [], []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=3600) as c:
            await ask(c, short)
            for _ in range(args.repeats):
                alone.append(await ask(c, short))
                large_alone.append(await ask(c, large))
                big = asyncio.ensure_future(ask(c, large))
                await asyncio.sleep(1.0)
                behind.append(await ask(c, short))
                large_shared.append(await big)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    a, b = statistics.median(alone), statistics.median(behind)
    print(f"16-token request alone:                         {a:.2f} s")
    print(
        f"behind majority vote @{args.samples} x {args.max_tokens} tokens: {b:.2f} s "
        f"({b / a:.1f}x alone)"
    )
    print(
        f"the large request alone / with the short one:   "
        f"{statistics.median(large_alone):.1f} s / {statistics.median(large_shared):.1f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server-path", default=None)
    asyncio.run(main(parser.parse_args()))
