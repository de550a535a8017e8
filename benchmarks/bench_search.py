"""Step-level search (issue 28) on the embedded SmolLM2 in process: for beam search and
particle filtering at the default settings (8 candidates per step; beam: 2 beams x 4, steps
end at a blank line, at most 64 tokens a step and 16 steps) against majority vote at 8, on
the first GSM8K test problems (../shared/data/gsm8k/test_first1000.jsonl) as chat prompts:

- tokens prefilled per step call with the session's prefix sharing (the llama.cpp engine's
  own counter) and without it (each call's whole prompt: the prompt and the partial
  solution, what an engine without a prefix cache prefills);
- seconds per request, generated tokens per request, accuracy.

Prints a table; not a test.

    python benchmarks/bench_search.py [--limit 10] [--samples 8] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from ponder import runner
from ponder.answers import AnswerSpec, as_answer, equivalent
from ponder.engines.llamacpp import LlamaCppEngine
from ponder.strategies import Job, SelectOptions
from ponder.types import SamplingParams

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test_first1000.jsonl"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    args = ap.parse_args()
    items = [json.loads(x) for x in DATA.read_text().splitlines()][: args.limit]
    engine = LlamaCppEngine(None, "smollm2", n_ctx=16384, max_samples=32)
    await engine.start()
    spec = AnswerSpec("number")
    rows = ["majority_vote", "beam", "particles"]
    acc: dict[str, dict[str, list[float]]] = {
        r: {
            "ok": [],
            "gen": [],
            "s": [],
            "calls": [],
            "shared": [],
            "unshared": [],
            "tot": [],
            "utot": [],
        }
        for r in rows
    }
    try:
        for k, item in enumerate(items):
            question = item["question"] + "\nSolve it step by step, then give the answer."
            ids = engine.render_chat([{"role": "user", "content": question}])
            gold = as_answer(item["answer"].split("####")[-1].strip(), "number")
            params = SamplingParams(
                max_tokens=args.max_tokens, temperature=args.temperature, seed=100 + k
            )
            for name in rows:
                job = Job(
                    name,
                    ids,
                    params,
                    args.samples,
                    options=SelectOptions(answer=spec),
                    question=question,
                )
                before = engine.counters.prefilled
                t0 = time.perf_counter()
                out = await runner.run(job, engine)
                seconds = time.perf_counter() - t0
                prefilled = engine.counters.prefilled - before
                d = out.decision
                got = d.answers[d.chosen] if d is not None else None
                a = acc[name]
                a["ok"].append(float(bool(got and gold and equivalent(got, gold))))
                a["gen"].append(out.generation.completion_tokens)
                a["s"].append(seconds)
                search = d.notes.get("search") if d is not None else None
                if isinstance(search, dict):
                    a["calls"].append(search["calls"])
                    # the first call prefills the prompt either way: per later step call
                    later = max(search["calls"] - 1, 1)
                    a["shared"].append((prefilled - len(ids)) / later)
                    a["unshared"].append((search["prefix_tokens"] - len(ids)) / later)
                    a["tot"].append(prefilled)
                    a["utot"].append(search["prefix_tokens"])
            print(f"{k + 1}/{len(items)}", end="\r", flush=True)
    finally:
        await engine.close()
    print(
        f"\n{len(items)} GSM8K problems, {args.samples} candidates per step, temperature "
        f"{args.temperature}, max_tokens {args.max_tokens}"
    )
    head = f"{'row':<16}{'accuracy':>9}{'gen tok':>9}{'s/req (median)':>16}{'calls':>7}"
    print(
        head + f"{'prefill/call shared':>21}{'unshared':>10}{'prefilled/req':>15}{'unshared':>10}"
    )
    for name, a in acc.items():
        extra = ""
        if a["calls"]:
            extra = (
                f"{statistics.median(a['calls']):>7.0f}{statistics.median(a['shared']):>21.1f}"
                f"{statistics.median(a['unshared']):>10.1f}{statistics.median(a['tot']):>15.0f}"
                f"{statistics.median(a['utot']):>10.0f}"
            )
        print(
            f"{name:<16}{statistics.mean(a['ok']):>9.3f}{statistics.mean(a['gen']):>9.0f}"
            f"{statistics.median(a['s']):>16.2f}{extra}"
        )


if __name__ == "__main__":
    asyncio.run(main())
