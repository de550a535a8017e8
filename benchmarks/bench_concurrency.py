"""Many users at once on the embedded engine (continuous batching), through a real server.

    python benchmarks/bench_concurrency.py [--requests 8] [--max-tokens 128] [--repeats 3]
                                           [--threads N]

Starts `ponder serve` (llama.cpp, SmolLM2) on a free port and prints, as medians over
`--repeats` rounds:
1. one request alone; `--requests` requests one after another; the same requests at once
   (wall time, the concurrent/one ratio, aggregate generated tokens/s);
2. a 16-token request alone, and sent while a CNTP request runs (latency and ratio);
3. majority vote @8 (T 0.7, max_tokens 256): where a decode step's time goes, from the
   engine's counters in /metrics: the model's decode vs Ponder's host work (sampling, stats,
   detokenizing, stop checks), and the batch bound (8 sequences in one step vs one).
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    port: int, threads: int | None, env_extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PONDER_PORT=str(port), PONDER_LOG_LEVEL="warning", **(env_extra or {}))
    if threads:
        env["PONDER_THREADS"] = str(threads)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ponder.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become ready")


async def chat(
    client: httpx.AsyncClient, max_tokens: int, seed: int, **ponder: object
) -> tuple[float, int]:
    body: dict = {
        "model": "smollm2",
        "messages": PROMPT,
        "max_tokens": max_tokens,
        "seed": seed,
        "temperature": 0.7,
    }
    if ponder:
        body["ponder"] = ponder
    t = time.perf_counter()
    r = await client.post("/v1/chat/completions", json=body)
    r.raise_for_status()
    return time.perf_counter() - t, int(r.json()["usage"]["completion_tokens"])


async def cntp(client: httpx.AsyncClient, max_tokens: int) -> float:
    t = time.perf_counter()
    r = await client.post(
        "/v1/completions",
        json={
            "model": "smollm2",
            "prompt": "Q: Explain why the sky is blue.\nA:",
            "max_tokens": max_tokens,
            "seed": 1,
            "ponder": {"strategy": "cntp", "cntp": {"entropy_low": 0.0, "entropy_high": 1.0}},
        },
    )
    r.raise_for_status()
    return time.perf_counter() - t


def counters(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("ponder_engine_") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    proc = start_server(port, args.threads)
    n, mt = args.requests, args.max_tokens
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=3600) as c:
            await chat(c, 8, 0)  # warm
            one, seq, conc, seq_tok, conc_tok = [], [], [], [], []
            for r in range(args.repeats):
                one.append((await chat(c, mt, 100 * r))[0])
                t = time.perf_counter()
                toks = [(await chat(c, mt, 100 * r + i))[1] for i in range(n)]
                seq.append(time.perf_counter() - t)
                seq_tok.append(sum(toks) / seq[-1])
                t = time.perf_counter()
                res = await asyncio.gather(*(chat(c, mt, 100 * r + i) for i in range(n)))
                conc.append(time.perf_counter() - t)
                conc_tok.append(sum(x[1] for x in res) / conc[-1])
            med = statistics.median
            print(f"1. {n} requests, max_tokens {mt} (medians of {args.repeats}):")
            print(f"   one alone               {med(one):6.2f} s")
            print(f"   {n} one after another    {med(seq):6.2f} s  {med(seq_tok):6.1f} tokens/s")
            print(
                f"   {n} at once              {med(conc):6.2f} s  {med(conc_tok):6.1f} tokens/s"
                f"  = {med(conc) / med(one):.2f}x one,"
                f" {med(conc_tok) / med(seq_tok):.2f}x the tokens/s"
            )
            alone, during = [], []
            for r in range(args.repeats):
                alone.append((await chat(c, 16, 7 + r))[0])
                task = asyncio.ensure_future(cntp(c, 128))
                await asyncio.sleep(2.0)  # CNTP is drafting and branching by now
                during.append((await chat(c, 16, 7 + r))[0])
                still = not task.done()
                await task
                if not still:
                    print("   (the CNTP request ended before the short one was sent)")
            print("2. a 16-token request:")
            print(f"   alone                   {med(alone):6.2f} s")
            ratio = med(during) / med(alone)
            print(f"   while CNTP runs         {med(during):6.2f} s  = {ratio:.2f}x")
            before = counters(port)
            t = time.perf_counter()
            votes = await chat(c, 256, 1, strategy="majority_vote", samples=8)
            wall = time.perf_counter() - t
            after = counters(port)
            d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
            decode = d.get("ponder_engine_decode_seconds_total", 0.0)
            busy = d.get("ponder_engine_busy_seconds_total", 0.0)
            steps = d.get("ponder_engine_steps_total", 0.0)
            seqs = d.get("ponder_engine_step_sequences_total", 0.0)
            single = [(await chat(c, 256, 1 + i))[0] for i in range(8)]
            print("3. majority vote @8, max_tokens 256:")
            print(
                f"   {wall:.2f} s, {votes[1]} tokens, {steps:.0f} steps, "
                f"{seqs / max(steps, 1):.1f} sequences per step"
            )
            print(
                f"   decode {decode:.2f} s, host work {busy - decode:.2f} s "
                f"({(busy - decode) / max(decode, 1e-9):.1%} of the decode time)"
            )
            print(
                f"   8 single-sample requests one after another: {sum(single):.2f} s "
                f"= {sum(single) / wall:.2f}x the batch of 8"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    asyncio.run(main(p.parse_args()))
