"""Majority vote @8 on AQuA problems: Ponder -> llama.cpp server (upstream engine) vs Ponder's
in-process llama.cpp engine, same model (embedded SmolLM2), same max_tokens.

    python benchmarks/bench_upstream.py [--problems 20] [--max-tokens 128]

Starts `python -m llama_cpp.server` on a loopback port (`--logits_all True`, which its
completions need for logprobs). Prints per-problem wall times, medians and upstream requests
per problem. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from ponder.answers import AnswerSpec
from ponder.engines.llamacpp import LlamaCppEngine, embedded_model_path
from ponder.engines.upstream import UpstreamEngine
from ponder.eval.datasets import read_aqua
from ponder.strategies import REGISTRY, SelectOptions
from ponder.types import SamplingParams

AQUA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aqua" / "test.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(args: argparse.Namespace, url: str) -> None:
    problems = read_aqua(AQUA)[: args.problems]
    opts = SelectOptions(answer=AnswerSpec("choice"))
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.7)
    up = UpstreamEngine(url, vocab_size=49152)
    await up.start()
    local = LlamaCppEngine(None, "smollm2", n_ctx=8192, max_samples=8)
    await local.start()
    rows = []
    for k, p in enumerate(problems):
        messages = [{"role": "user", "content": p.prompt}]
        seeded = SamplingParams(**{**params.__dict__, "seed": 1000 * k})
        before = up.requests_sent
        t0 = time.perf_counter()
        g_up = await up.sample(up.render_chat(messages), seeded, 8)
        t_up = time.perf_counter() - t0
        requests = up.requests_sent - before
        t0 = time.perf_counter()
        g_local = await local.sample(local.render_chat(messages), seeded, 8)
        t_local = time.perf_counter() - t0
        a_up = REGISTRY["majority_vote"].decide(g_up.samples, opts).answer
        a_local = REGISTRY["majority_vote"].decide(g_local.samples, opts).answer
        tok_up = sum(s.n_tokens for s in g_up.samples)
        tok_local = sum(s.n_tokens for s in g_local.samples)
        rows.append((t_up, t_local, requests, tok_up, tok_local))
        print(
            f"problem {k + 1:2}: upstream {t_up:6.1f} s ({requests} requests, {tok_up} tok, "
            f"answer {a_up}) | in process {t_local:5.1f} s ({tok_local} tok, answer "
            f"{a_local}) | gold {p.gold}",
            flush=True,
        )
    med = statistics.median
    print(f"\n{len(rows)} AQuA problems, majority vote @8, max_tokens {args.max_tokens}, T=0.7")
    print(
        f"wall per problem: upstream median {med(r[0] for r in rows):.1f} s, in process "
        f"median {med(r[1] for r in rows):.1f} s"
    )
    print(
        f"tokens/s: upstream {sum(r[3] for r in rows) / sum(r[0] for r in rows):.0f}, "
        f"in process {sum(r[4] for r in rows) / sum(r[1] for r in rows):.0f}"
    )
    print(
        f"upstream requests per problem: median {med(r[2] for r in rows):.0f} "
        f"(the first problem also probes n; honours n: {up.honours_n})"
    )
    await up.close()
    await local.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    if not AQUA.exists():
        print(f"data not found: {AQUA}")
        return 0
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(embedded_model_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "4096",
            "--interrupt_requests",
            "False",
            "--logits_all",
            "True",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        asyncio.run(run(args, url))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
