"""The `ponder eval` command: read, sample (or replay), evaluate, report."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .datasets import READERS, load, read_replay
from .runner import CandidateSource, evaluate, replay_records, sample_all, summarize, write_outputs

ALL = ("majority_vote", "self_certainty", "rpc", "cntp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        help="data file (GSM8K, SVAMP, AQuA, StrategyQA, "
        "MATH-500, few-shot arith, or JSONL with question/answer[/format])",
    )
    p.add_argument("--reader", choices=sorted(READERS), help="force a reader (default: detect)")
    p.add_argument("--replay", type=Path, help="evaluate stored samples instead of generating")
    p.add_argument("--strategies", default="majority_vote,self_certainty,rpc")
    p.add_argument("--samples", default="1,2,4,8,16", help="budgets N, comma-separated")
    p.add_argument("--subsets", type=int, default=8, help="random subsets per budget below max")
    p.add_argument("--limit", type=int, help="first N problems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--url", help="a running Ponder server (default: in process)")
    p.add_argument("--model", help="model (in process: GGUF path; with --url: model name)")
    p.add_argument("--out", type=Path, default=Path("eval-out"))


def run_eval(args: argparse.Namespace) -> int:
    # On a terminal, its width; piped or redirected, wide enough that the table is never cut
    # (rich would assume 80 columns).
    console = Console() if sys.stdout.isatty() else Console(width=200)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in ALL]
    if unknown:
        console.print(f"[red]unknown strategies:[/red] {', '.join(unknown)} (known: {ALL})")
        return 2
    budgets = sorted({int(x) for x in args.samples.split(",") if x.strip()})
    if not budgets or budgets[0] < 1:
        console.print("[red]--samples needs positive budgets[/red]")
        return 2
    started = time.perf_counter()
    if args.replay:
        problems = read_replay(args.replay)[: args.limit]
        records = replay_records(problems)
        have = records[0].candidates["sampling"][0] if records else None
        for name, field in (("self_certainty", "self_certainty"), ("rpc", "mean_logprob")):
            if name in strategies and (have is None or getattr(have, field) is None):
                console.print(f"skipping {name}: the replay file has no per-sample {field}")
                strategies.remove(name)
        if "cntp" in strategies:
            console.print("skipping cntp: it needs its own decoding, not stored samples")
            strategies.remove("cntp")
    else:
        if args.data is None:
            console.print("[red]give --data FILE or --replay FILE[/red]")
            return 2
        problems_in = load(args.data, args.reader)[: args.limit]
        sampler = CandidateSource(args.url, args.temperature, args.seed, args.model)
        with_cntp = "cntp" in strategies
        with_sampling = any(s != "cntp" for s in strategies)

        async def go() -> list:
            await sampler.start()
            try:
                with Progress(
                    TextColumn("sampling"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=console,
                ) as bar:
                    task = bar.add_task("sampling", total=len(problems_in))
                    return await sample_all(
                        problems_in,
                        sampler,
                        max(budgets),
                        with_cntp,
                        with_sampling,
                        lambda: bar.advance(task),
                    )
            finally:
                await sampler.close()

        try:
            records = asyncio.run(go())
        except KeyboardInterrupt:
            records = []
        if len(records) < len(problems_in):
            console.print(f"stopped early: evaluating the {len(records)} finished problems")
    if not records:
        console.print("[red]no problems to evaluate[/red]")
        return 1
    trials = {r.id: evaluate(r, strategies, budgets, args.subsets, args.seed) for r in records}
    rows = summarize(trials, args.seed, args.subsets)
    files = write_outputs(args.out, records, rows, trials)
    table = Table(
        "strategy",
        "N",
        "subsets",
        "accuracy",
        "95% CI",
        "tokens",
        "ECE",
        "Brier",
        title=f"{len(records)} problems, seed {args.seed}",
    )
    for r in rows:
        table.add_row(
            r.strategy,
            str(r.n),
            str(r.subsets),
            f"{r.accuracy:.3f}",
            f"[{r.ci_low:.3f}, {r.ci_high:.3f}]",
            f"{r.mean_tokens:.0f}",
            f"{r.ece:.3f}",
            f"{r.brier:.3f}",
        )
    console.print(table)
    console.print(
        f"wrote {', '.join(str(f) for f in files)} in {time.perf_counter() - started:.0f} s"
    )
    return 0
