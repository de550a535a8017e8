"""Structured outputs on the embedded engine (issue 26), on ../shared/data/extract/people_60.jsonl
with its 4-field schema: the share of replies that validate without and with the llguidance
mask, field accuracy of one sample against a per-field vote over N constrained samples, and
tokens/s with the mask against without. Prints figures; not a test.

    python benchmarks/bench_structured.py [--limit 60] [--samples 8]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from pathlib import Path

import jsonschema

from ponder.engines.llamacpp import LlamaCppEngine
from ponder.types import SamplingParams

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "extract"


def ask(text: str) -> str:
    return f"Extract the person as JSON with keys name, age, city, occupation: {text}"


def parsed(text: str, schema: dict) -> dict | None:
    try:
        obj = json.loads(text)
        jsonschema.validate(obj, schema)
        return obj
    except (ValueError, jsonschema.ValidationError):
        return None


def vote(objs: list[dict | None], fields: list[str]) -> dict:
    """Each field's most frequent value among the samples that parsed (ties: first seen)."""
    out = {}
    for f in fields:
        counts = collections.Counter(json.dumps(o[f]) for o in objs if o is not None and f in o)
        out[f] = json.loads(counts.most_common(1)[0][0]) if counts else None
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args()
    schema = json.loads((DATA / "people_schema.json").read_text())
    rows = [json.loads(x) for x in (DATA / "people_60.jsonl").read_text().splitlines()][
        : args.limit
    ]
    engine = LlamaCppEngine(None, "smollm2", n_ctx=16384, max_samples=16)
    await engine.start()
    text_schema = json.dumps(schema)
    stats = {"free": [0, 0.0, 0], "masked": [0, 0.0, 0]}  # valid, seconds, tokens
    one, voted, fields = [], [], list(schema["properties"])
    for row in rows:
        prompt = engine.render_chat([{"role": "user", "content": ask(row["text"])}])
        for kind, js in (("free", None), ("masked", text_schema)):
            params = SamplingParams(max_tokens=96, temperature=0.7, seed=1, json_schema=js)
            t0 = time.perf_counter()
            gen = await engine.sample(prompt, params, args.samples)
            stats[kind][1] += time.perf_counter() - t0
            stats[kind][2] += sum(s.n_tokens for s in gen.samples)
            objs = [parsed(s.text, schema) for s in gen.samples]
            stats[kind][0] += sum(o is not None for o in objs)
            if kind == "masked":
                one += [
                    o is not None and o.get(f) == row["gold"][f] for o in objs[:1] for f in fields
                ]
                v = vote(objs, fields)
                voted += [v[f] == row["gold"][f] for f in fields]
    await engine.close()
    n = len(rows) * args.samples
    for kind, (ok, secs, toks) in stats.items():
        print(
            f"{kind}: {ok}/{n} samples validate ({100 * ok / n:.1f}%), {toks / secs:.1f} tokens/s"
        )
    print(f"field accuracy, one constrained sample: {100 * sum(one) / len(one):.1f}%")
    print(f"field accuracy, per-field vote of {args.samples}: {100 * sum(voted) / len(voted):.1f}%")


if __name__ == "__main__":
    asyncio.run(main())
