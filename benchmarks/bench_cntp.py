"""CNTP vs plain sampling on the embedded SmolLM2, and batched vs one-by-one trials.

    python benchmarks/bench_cntp.py [--prompts 20] [--max-tokens 256] [--seed 0]

For each prompt (same seed): tokens generated (every trial token counted) and wall time of
plain sampling and of CNTP; the branching rate (branched steps per output token); and the
throughput of CNTP's trial calls when the k trials are decoded as one batch vs one by one.
Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import statistics
import time

from ponder.engines.llamacpp import LlamaCppEngine
from ponder.strategies import CntpOptions
from ponder.strategies.cntp_decode import cntp_decode, cntp_run
from ponder.types import Generation, Sampler, SamplingParams

PROMPTS = [
    "Explain why the sky is blue.",
    "Write a short poem about the sea.",
    "What is 17 times 3? Show your steps.",
    "Give three tips for learning a new language.",
    "Describe a cat to someone who has never seen one.",
    "Why do leaves change colour in autumn?",
    "Tom has 5 apples and gives away 2. How many are left?",
    "Summarize the story of Little Red Riding Hood.",
    "What are the benefits of regular exercise?",
    "How does a bicycle stay upright?",
    "Write a haiku about winter.",
    "List the planets of the solar system.",
    "What is the capital of France, and why is it famous?",
    "Explain photosynthesis in simple words.",
    "A train travels 60 km in one hour. How far in three hours?",
    "Write a friendly email inviting a colleague to lunch.",
    "What is the difference between weather and climate?",
    "Give a recipe for a simple salad.",
    "Why is sleep important?",
    "Describe your ideal weekend.",
]


class TrialTimer:
    """A Sampler that times CNTP's trial calls, optionally drawing their k trials one by one."""

    def __init__(self, inner: Sampler, one_by_one: bool) -> None:
        self.inner = inner
        self.one_by_one = one_by_one
        self.trial_s = 0.0
        self.trial_tokens = 0

    async def sample(self, prompt_ids: list[int], params: SamplingParams, n: int) -> Generation:
        if not params.punct_stop:
            return await self.inner.sample(prompt_ids, params, n)
        t0 = time.perf_counter()
        if self.one_by_one and n > 1:
            parts = []
            for i in range(n):
                seed = None if params.seed is None else params.seed + i
                g = await self.inner.sample(prompt_ids, dataclasses.replace(params, seed=seed), 1)
                g.samples[0].index = i
                parts.append(g)
            gen = dataclasses.replace(parts[0], samples=[g.samples[0] for g in parts])
        else:
            gen = await self.inner.sample(prompt_ids, params, n)
        self.trial_s += time.perf_counter() - t0
        self.trial_tokens += sum(s.n_tokens for s in gen.samples)
        return gen

    async def sample_many(
        self, requests: list[tuple[list[int], SamplingParams, int]]
    ) -> list[Generation]:
        return list(await asyncio.gather(*(self.sample(*r) for r in requests)))


class OneByOne:
    """The engine seen with `lockstep` 1: CNTP + SC decodes then run one after another."""

    def __init__(self, engine: LlamaCppEngine) -> None:
        self._engine = engine
        self.detokenize = engine.detokenize
        self.lockstep = 1

    @contextlib.asynccontextmanager
    async def session(self):  # type: ignore[no-untyped-def]
        async with self._engine.session() as s:
            yield TrialTimer(s, one_by_one=False)


async def run_sc(args: argparse.Namespace) -> None:
    """CNTP + self-consistency: N decodes in lockstep batches vs one after another."""
    engine = LlamaCppEngine(None, "smollm2", n_ctx=32768, max_samples=64)
    await engine.start()
    rows = []
    for k, text in enumerate(PROMPTS[: args.prompts]):
        prompt = engine.render_chat([{"role": "user", "content": text}])
        params = SamplingParams(max_tokens=args.max_tokens, temperature=0.7, seed=args.seed + k)
        t0 = time.perf_counter()
        await cntp_run(engine, prompt, params, CntpOptions(), args.sc)
        lock = time.perf_counter() - t0
        t0 = time.perf_counter()
        await cntp_run(OneByOne(engine), prompt, params, CntpOptions(), args.sc)  # type: ignore[arg-type]
        seq = time.perf_counter() - t0
        rows.append((lock, seq))
        print(
            f"prompt {k + 1:2}: {args.sc} decodes in lockstep {lock:5.1f} s, one after "
            f"another {seq:5.1f} s",
            flush=True,
        )
    med = statistics.median
    print(
        f"\nCNTP + SC, N={args.sc}, {len(rows)} prompts, max_tokens {args.max_tokens}: median "
        f"lockstep {med(r[0] for r in rows):.1f} s vs one after another "
        f"{med(r[1] for r in rows):.1f} s (x{med(r[1] / r[0] for r in rows):.2f})"
    )
    await engine.close()


async def run(args: argparse.Namespace) -> None:
    engine = LlamaCppEngine(None, "smollm2", n_ctx=16384, max_samples=16)
    await engine.start()
    opts = CntpOptions()
    rows = []
    timers = {"batched": [0.0, 0], "one_by_one": [0.0, 0]}
    for k, text in enumerate(PROMPTS[: args.prompts]):
        prompt = engine.render_chat([{"role": "user", "content": text}])
        params = SamplingParams(max_tokens=args.max_tokens, temperature=0.7, seed=args.seed + k)
        t0 = time.perf_counter()
        plain = (await engine.sample(prompt, params, 1)).samples[0]
        plain_s = time.perf_counter() - t0
        cntp = {}
        for mode in ("batched", "one_by_one"):
            async with engine.session() as session:
                timer = TrialTimer(session, one_by_one=mode == "one_by_one")
                t0 = time.perf_counter()
                r = await cntp_decode(timer, engine.detokenize, prompt, params, opts)
                cntp[mode] = (r, time.perf_counter() - t0)
                timers[mode][0] += timer.trial_s
                timers[mode][1] += timer.trial_tokens
        r, cntp_s = cntp["batched"]
        generated = r.sample.n_tokens + r.unused_tokens
        rows.append((plain.n_tokens, plain_s, generated, r.sample.n_tokens, cntp_s, len(r.steps)))
        print(
            f"prompt {k + 1:2}: plain {plain.n_tokens:3} tok {plain_s:5.1f} s | CNTP output "
            f"{r.sample.n_tokens:3} tok, generated {generated:4} tok, {cntp_s:5.1f} s, "
            f"{len(r.steps)} branched steps",
            flush=True,
        )
    med = statistics.median
    print(
        f"\n{len(rows)} prompts, max_tokens {args.max_tokens}, T=0.7, defaults M=10 "
        "H_low=0.01 H_high=1.5"
    )
    print(f"plain : median {med(r[0] for r in rows):.0f} tokens, {med(r[1] for r in rows):.2f} s")
    print(
        f"CNTP  : median {med(r[2] for r in rows):.0f} tokens generated "
        f"({med(r[3] for r in rows):.0f} in the output), {med(r[4] for r in rows):.2f} s"
    )
    print(
        f"CNTP / plain: tokens generated x{med(r[2] / max(r[0], 1) for r in rows):.1f}, "
        f"wall x{med(r[4] / r[1] for r in rows):.1f} (medians of per-prompt ratios)"
    )
    rate = sum(r[5] for r in rows) / max(sum(r[3] for r in rows), 1)
    print(f"branching rate: {rate:.3f} branched steps per output token")
    (bs, bt), (ss, st) = timers["batched"], timers["one_by_one"]
    print(
        f"trial decoding: batched {bt / bs:.0f} tok/s, one by one {st / ss:.0f} tok/s "
        f"-> batched trials x{(bt / bs) / (st / ss):.2f} faster"
    )
    await engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--sc",
        type=int,
        default=0,
        help="instead: CNTP + SC with N decodes, lockstep vs one after another",
    )
    args = ap.parse_args()
    asyncio.run(run_sc(args) if args.sc else run(args))


if __name__ == "__main__":
    main()
