"""Benchmark: one request with samples=8 vs samples=1 on the embedded engine, and selection time.

    python benchmarks/bench_sampling.py [--max-tokens 128] [--repeats 3]

Prints medians; not a test. The 8 samples are decoded in one llama.cpp batch, so the ratio
of wall times should stay well below 8 (target <= 5x on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np

from ponder.answers import AnswerSpec
from ponder.engines.llamacpp import LlamaCppEngine
from ponder.strategies import REGISTRY, SelectOptions
from ponder.types import Sample, SamplingParams

PROMPT = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


async def _generate(engine: LlamaCppEngine, n: int, max_tokens: int, seed: int):
    prompt = engine.render_chat(PROMPT)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=seed)
    t0 = time.perf_counter()
    gen = await engine.sample(prompt, params, n)
    return time.perf_counter() - t0, sum(s.n_tokens for s in gen.samples)


def bench_engine(max_tokens: int, repeats: int) -> None:
    engine = LlamaCppEngine(None, "smollm2", n_ctx=16384, max_samples=16)
    asyncio.run(engine.start())
    rows = {}
    for n in (1, 8):
        runs = [asyncio.run(_generate(engine, n, max_tokens, seed=100 + r)) for r in range(repeats)]
        wall = statistics.median(w for w, _ in runs)
        toks = statistics.median(t for _, t in runs)
        rows[n] = (wall, toks)
        print(
            f"samples={n:<2} max_tokens={max_tokens}: median wall {wall:.2f} s, "
            f"{toks:.0f} tokens, {toks / wall:.0f} tokens/s"
        )
    (w1, t1), (w8, t8) = rows[1], rows[8]
    print(
        f"wall(8) / wall(1) = {w8 / w1:.2f}x  (tokens ratio {t8 / t1:.2f}; drawn one after "
        f"another it would be ~{t8 / t1:.1f}x)"
    )
    asyncio.run(engine.close())


def _synthetic(n: int, rng: np.random.Generator) -> list[Sample]:
    out = []
    for i in range(n):
        # Per-sample mean logprobs spread as real samples' do (about -1.2 .. -0.1 on SmolLM2).
        mean = rng.uniform(-1.2, -0.1)
        lp = (mean + rng.normal(0, 0.3, size=200)).astype(np.float32).clip(max=0)
        answer = int(rng.choice([42, 41, 40, 7]))
        out.append(
            Sample(
                i,
                f"... so the answer is {answer}.",
                list(range(200)),
                "stop",
                lp,
                -lp,
                lp.copy(),
                np.zeros(200, np.float32),
                tokens_text=[""] * 200,
            )
        )
    return out


def bench_selection(n: int = 64, repeats: int = 200) -> None:
    samples = _synthetic(n, np.random.default_rng(0))
    opts = SelectOptions(answer=AnswerSpec("auto"))
    for name, strategy in REGISTRY.items():
        if strategy.kind != "select":
            continue
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            strategy.decide(samples, opts)
            times.append(time.perf_counter() - t0)
        print(f"selection {name} N={n}: median {statistics.median(times) * 1e3:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-engine", action="store_true")
    args = ap.parse_args()
    bench_selection()
    if not args.skip_engine:
        bench_engine(args.max_tokens, args.repeats)


if __name__ == "__main__":
    main()
