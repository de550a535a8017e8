"""Accuracy of sample-1, majority@N, self-certainty@N (Borda and best-of-N) and RPC@N on the
SAME samples, drawn once per problem on the embedded SmolLM2.

    python benchmarks/bench_selection_accuracy.py [--data ../shared/data/arith/arith_fewshot.jsonl]
        [--limit 50] [--samples 8] [--seed 0] [--temperature 0.7]

The default data set is the few-shot arithmetic set of the project workspace: completion
prompts like "2 + 3 = 5 ... 4 + 9 =", gold = the number. SmolLM2-135M gets roughly half of
them right with one sample, so selection has room to help or hurt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from ponder.answers import AnswerSpec, equivalent, extract
from ponder.engines.llamacpp import LlamaCppEngine
from ponder.strategies import REGISTRY, RpcOptions, SelectOptions, SelfCertaintyOptions
from ponder.types import SamplingParams

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "arith" / "arith_fewshot.jsonl"
)
SPEC = AnswerSpec("number")

VARIANTS = {
    "majority_vote": ("majority_vote", SelectOptions(answer=SPEC)),
    "self_certainty (Borda p=0.5)": ("self_certainty", SelectOptions(answer=SPEC)),
    "self_certainty (best-of-N)": (
        "self_certainty",
        SelectOptions(answer=SPEC, own=SelfCertaintyOptions(vote=False)),
    ),
    "rpc": ("rpc", SelectOptions(answer=SPEC)),
    "rpc (no pruning = PC)": ("rpc", SelectOptions(answer=SPEC, own=RpcOptions(prune=False))),
}


def correct(text: str | None, gold: str) -> bool:
    if text is None:
        return False
    got = extract(text, SPEC)
    want = extract(gold, SPEC)
    return got is not None and want is not None and equivalent(got, want)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.7)
    args = ap.parse_args()
    if not args.data.exists():
        print(f"data not found: {args.data} (the shared workspace data is not beside this clone)")
        return 0
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    rows = rows[: args.limit]
    engine = LlamaCppEngine(None, "smollm2", n_ctx=4096, max_samples=args.samples)
    asyncio.run(engine.start())
    params = SamplingParams(max_tokens=8, temperature=args.temperature, stop=("\n",))
    hits = {"sample-1 (sample 0)": 0, "sample-1 (mean over the N)": 0.0}
    hits.update({name: 0 for name in VARIANTS})
    sel_times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    t0 = time.perf_counter()
    for k, row in enumerate(rows):
        p = SamplingParams(**{**params.__dict__, "seed": args.seed + 1000 * k})
        gen = asyncio.run(engine.sample(engine.tokenize(row["prompt"]), p, args.samples))
        ok = [correct(s.text, row["answer"]) for s in gen.samples]
        hits["sample-1 (sample 0)"] += ok[0]
        hits["sample-1 (mean over the N)"] += sum(ok) / len(ok)
        for name, (strategy, opts) in VARIANTS.items():
            t = time.perf_counter()
            d = REGISTRY[strategy].decide(gen.samples, opts)
            sel_times[name].append(time.perf_counter() - t)
            hits[name] += correct(d.answer, row["answer"])
    wall = time.perf_counter() - t0
    n = len(rows)
    print(
        f"{n} problems of {args.data.name}, N={args.samples}, T={args.temperature}, "
        f"seed {args.seed}, {wall:.0f} s"
    )
    for name, h in hits.items():
        extra = ""
        if name in sel_times:
            extra = f"  (selection median {statistics.median(sel_times[name]) * 1e3:.2f} ms)"
        print(f"  {name:<30} {h / n:6.1%}{extra}")
    asyncio.run(engine.close())
    return 0


if __name__ == "__main__":
    sys.exit(main())
