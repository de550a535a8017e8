"""How many llama.cpp threads, on an idle and on a busy host (PONDER_THREADS).

    python benchmarks/bench_threads.py [--threads 1,2] [--busy 0,1,2] [--repeats 3]

For each thread count, starts `ponder serve` and times a majority-vote request (8 samples,
max_tokens 64, an arithmetic question) while 0, 1 or 2 other processes keep a core busy each
(busy loops, as another tenant of the machine would). Prints medians; not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_concurrency import free_port, start_server

QUESTION = [{"role": "user", "content": "What is 17 times 3? Show your steps."}]


def spin(stop: float) -> None:
    while time.time() < stop:
        pass


def ask(port: int, seed: int) -> float:
    t = time.perf_counter()
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={
            "model": "smollm2",
            "messages": QUESTION,
            "max_tokens": 64,
            "seed": seed,
            "ponder": {"strategy": "majority_vote", "samples": 8},
        },
        timeout=600,
    )
    r.raise_for_status()
    return time.perf_counter() - t


def main(args: argparse.Namespace) -> None:
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores; majority vote @8, max_tokens 64, medians of {args.repeats}")
    print("threads  " + "  ".join(f"busy={b:<6}" for b in args.busy))
    for threads in args.threads:
        port = free_port()
        proc = start_server(port, threads)
        row = []
        try:
            ask(port, 0)  # warm
            for busy in args.busy:
                hogs = [
                    multiprocessing.Process(target=spin, args=(time.time() + 600,))
                    for _ in range(busy)
                ]
                for h in hogs:
                    h.start()
                try:
                    row.append(statistics.median(ask(port, s) for s in range(args.repeats)))
                finally:
                    for h in hogs:
                        h.terminate()
                        h.join()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print(f"{threads:<8} " + "  ".join(f"{t:6.2f} s  " for t in row))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    p.add_argument("--busy", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--repeats", type=int, default=3)
    main(p.parse_args())
