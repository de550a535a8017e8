"""Benchmark: samples=8 vs samples=1 on the vLLM engine (and on llama.cpp), and the cost of
vLLM exact stats. Same SmolLM2 weights (vLLM serves the folder `ponder export-hf` writes).

    # in the vLLM CPU environment (docs/engines.md "vLLM on a CPU"):
    python benchmarks/bench_vllm.py --model DIR [--dtype float32]  # vLLM, exact stats on and off
    # in the main environment:
    python benchmarks/bench_vllm.py --engine llamacpp

Prints medians of `--repeats` runs; not a test. Targets (issue 12): vLLM's N=8 / N=1 wall ratio
<= 4x; exact stats cost <= 10% of throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from ponder.types import SamplingParams

PROMPT = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


async def _measure(engine: Any, n: int, max_tokens: int, repeats: int) -> tuple[float, float]:
    prompt = engine.render_chat(PROMPT)
    walls, toks = [], []
    for r in range(repeats + 1):  # the first run warms caches and is not counted
        params = SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=100 + r)
        t0 = time.perf_counter()
        gen = await engine.sample(prompt, params, n)
        if r:
            walls.append(time.perf_counter() - t0)
            toks.append(sum(s.n_tokens for s in gen.samples))
    return statistics.median(walls), statistics.median(toks)


async def _run(engine: Any, label: str, max_tokens: int, repeats: int) -> dict[int, float]:
    await engine.start()
    rate = {}
    try:
        rows = {}
        for n in (1, 8):
            wall, toks = await _measure(engine, n, max_tokens, repeats)
            rows[n] = wall
            rate[n] = toks / wall
            print(
                f"{label} samples={n:<2} max_tokens={max_tokens}: median wall {wall:.2f} s, "
                f"{toks:.0f} tokens, {toks / wall:.0f} tokens/s"
            )
        print(f"{label} wall(8) / wall(1) = {rows[8] / rows[1]:.2f}x")
    finally:
        await engine.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--engine", choices=["vllm", "llamacpp"], default="vllm")
    ap.add_argument("--model", help="vLLM: the Hugging Face folder (ponder export-hf DIR)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--exact", choices=["both", "on", "off"], default="both")
    ap.add_argument("--dtype", default="auto", help="vLLM weights dtype (auto = the folder's)")
    args = ap.parse_args()
    if args.engine == "llamacpp":
        from ponder.engines.llamacpp import LlamaCppEngine

        eng = LlamaCppEngine(None, "smollm2", n_ctx=16384, max_samples=16)
        asyncio.run(_run(eng, "llama.cpp", args.max_tokens, args.repeats))
        return
    from ponder.engines.vllm import VllmEngine, VllmOptions

    if not args.model:
        ap.error("--model DIR is needed with --engine vllm (write it with `ponder export-hf`)")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    rates = {}
    for exact in {"both": (True, False), "on": (True,), "off": (False,)}[args.exact]:
        opts = VllmOptions(
            model=args.model, served_name="smollm2", max_model_len=2048, max_num_seqs=16,
            exact_stats=exact, dtype=args.dtype,
        )  # fmt: skip
        rates[exact] = asyncio.run(
            _run(VllmEngine(opts), f"vLLM exact={exact}", args.max_tokens, args.repeats)
        )
    if len(rates) == 2:
        for n in (1, 8):
            cost = 1 - rates[True][n] / rates[False][n]
            print(f"exact stats cost at samples={n}: {cost * 100:.1f}% of throughput")


if __name__ == "__main__":
    main()
