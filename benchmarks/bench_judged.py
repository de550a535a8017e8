"""The strategies that ask the model about its candidates (issue 27) against majority vote, on
the shared few-shot arithmetic set (../shared/data/arith/arith_fewshot.jsonl) with the
embedded SmolLM2 in process: accuracy, generated tokens per item (candidates and follow-up
calls: the compute the GenRM paper matches), follow-up prompt tokens per item, and seconds per
request. Majority vote runs at several N so its rows bracket the others' budgets. Prints a
table; not a test.

    python benchmarks/bench_judged.py [--limit 60] [--samples 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from ponder import runner
from ponder.answers import AnswerSpec, as_answer, equivalent, extract
from ponder.engines.llamacpp import LlamaCppEngine
from ponder.strategies import Job, SelectOptions
from ponder.strategies.verify import VerifyOptions
from ponder.types import SamplingParams

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "arith" / "arith_fewshot.jsonl"


def rows_of(n: int, samples: int) -> list[tuple[str, str, int, Any]]:
    """(row name, strategy, samples, own options)."""
    return [
        (f"majority_vote@{samples}", "majority_vote", samples, None),
        (f"majority_vote@{2 * samples}", "majority_vote", 2 * samples, None),
        (f"usc@{samples}", "usc", samples, None),
        (f"aggregate@{samples}", "aggregate", samples, None),
        (f"verify@{samples}", "verify", samples, None),
        (
            f"verify+weighted@{samples}",
            "verify",
            samples,
            VerifyOptions(select="weighted_vote"),
        ),
        (
            f"verify+cot2@{samples}",
            "verify",
            samples,
            VerifyOptions(verifications=2, rationale_tokens=48),
        ),
    ]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.7)
    args = ap.parse_args()
    items = [json.loads(x) for x in DATA.read_text().splitlines()][: args.limit]
    engine = LlamaCppEngine(None, "smollm2", n_ctx=16384, max_samples=32)
    await engine.start()
    spec = AnswerSpec("number")
    rows = rows_of(len(items), args.samples)
    acc: dict[str, dict[str, list[float]]] = {
        name: {"ok": [], "gen": [], "prompt": [], "s": []} for name, *_ in rows
    }
    one = {"ok": [], "gen": []}
    try:
        for k, item in enumerate(items):
            ids = engine.tokenize(item["prompt"])
            gold = as_answer(item["answer"], "number")
            params = SamplingParams(
                max_tokens=8, temperature=args.temperature, seed=1000 + k, stop=("\n",)
            )
            for name, strategy, n, own in rows:
                job = Job(
                    strategy,
                    ids,
                    params,
                    n,
                    options=SelectOptions(answer=spec, own=own),
                    question=item["prompt"],
                )
                t0 = time.perf_counter()
                out = await runner.run(job, engine)
                seconds = time.perf_counter() - t0
                d = out.decision
                got = d.answers[d.chosen] if d is not None else None
                ok = bool(got is not None and gold is not None and equivalent(got, gold))
                a = acc[name]
                a["ok"].append(float(ok))
                a["gen"].append(out.generation.completion_tokens)
                a["prompt"].append(out.generation.followup_prompt_tokens)
                a["s"].append(seconds)
                if name.startswith("majority_vote@") and n == args.samples:
                    first = out.generation.samples[0]
                    mine = extract(first.text, spec)
                    one["ok"].append(float(bool(mine and gold and equivalent(mine, gold))))
                    one["gen"].append(first.n_tokens)
            print(f"{k + 1}/{len(items)}", end="\r", flush=True)
    finally:
        await engine.close()
    print(
        f"\n{len(items)} items of {DATA.name}, temperature {args.temperature}, "
        f"max 8 tokens per sample, stop at a newline"
    )
    print(f"{'row':<24}{'accuracy':>9}{'gen tok/item':>14}{'follow-up prompt tok':>22}"
          f"{'s/request (median)':>20}")  # fmt: skip
    print(
        f"{'one sample':<24}{statistics.mean(one['ok']):>9.3f}{statistics.mean(one['gen']):>14.1f}"
    )
    for name, a in acc.items():
        print(
            f"{name:<24}{statistics.mean(a['ok']):>9.3f}{statistics.mean(a['gen']):>14.1f}"
            f"{statistics.mean(a['prompt']):>22.1f}{statistics.median(a['s']):>20.3f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
