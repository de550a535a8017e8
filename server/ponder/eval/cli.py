"""The `ponder eval` command: read, sample (or replay), evaluate, report."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..calibration import Calibration
from ..strategies import REGISTRY, DeepConfOptions, StrategyOptions
from .datasets import READERS, load, read_replay
from .draw import CandidateSource, sample_all, voter_for
from .html import write_html
from .records import replay_records
from .report import calibration_plot, write_outputs
from .runner import SAMPLING, evaluate, live, pool_of, replay_fields, unsupplied_stats
from .summary import SummaryRow, calibrate, summarize

ALL = tuple(name for name, s in REGISTRY.items() if s.kind != "plain")
"""The strategies `ponder eval` evaluates: replayed on stored samples, or (usc, aggregate,
verify: they ask the model again after sampling) run once per budget."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=_paths,
        help="data file (GSM8K, SVAMP, AQuA, StrategyQA, MATH-500, few-shot arith, or JSONL "
        "with question/answer[/format]); several, comma-separated, are evaluated as one set "
        "(ids prefixed with each file's name)",
    )
    p.add_argument("--reader", choices=sorted(READERS), help="force a reader (default: detect)")
    p.add_argument("--replay", type=Path, help="evaluate stored samples instead of generating")
    p.add_argument("--strategies", default="majority_vote,self_certainty,rpc")
    p.add_argument("--samples", default="1,2,4,8,16", help="budgets N, comma-separated")
    p.add_argument(
        "--pool",
        type=int,
        help="samples drawn per problem (default: the largest budget); above it, the largest "
        "budget and its adaptive and online rows are evaluated on --subsets random subsets "
        "too (more decisions to fit and check calibration at the largest N)",
    )
    p.add_argument(
        "--subsets", type=int, default=8, help="random subsets per budget below the pool"
    )
    p.add_argument("--limit", type=int, help="first N problems")
    p.add_argument(
        "--max-tokens",
        type=int,
        help="tokens per sample, for every problem (default: the data set's own, e.g. 256 "
        "for chat prompts, 8 for the few-shot arithmetic set)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--temperature",
        type=_temperatures,
        default=(0.7,),
        help="sampling temperature; several, comma-separated, each evaluated on its own "
        "(OUT/t<T>/...) and, with --calibrate, fitted into one OUT/calibration.json",
    )
    p.add_argument("--url", help="a running Ponder server (default: in process)")
    p.add_argument("--model", help="model (in process: GGUF path; with --url: model name)")
    p.add_argument("--out", type=Path, default=Path("eval-out"))
    p.add_argument(
        "--adaptive",
        default="",
        help="adaptive stopping rules to add as rows (beta,window): each selection strategy "
        "under the largest budget, replayed on the stored samples in order",
    )
    p.add_argument(
        "--deepconf",
        default="",
        metavar="WINDOW,WARMUP[,KEEP]",
        help="DeepConf's settings (default 2048,16,0.9): sliding window in tokens, online "
        "warm-up traces, share kept; `deepconf+online` rows need the largest budget to exceed "
        "the warm-up",
    )
    p.add_argument(
        "--budget",
        type=float,
        metavar="TOKENS",
        help="also print the compute-matched comparison: each strategy's best row within "
        "TOKENS generated tokens per problem (candidates and follow-up calls)",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="fit confidence maps on half the problems, report ECE on the other half, and "
        "write OUT/calibration.json (serve it with PONDER_CALIBRATION)",
    )


def _paths(text: str) -> list[Path]:
    return [Path(x.strip()) for x in text.split(",") if x.strip()]


def _temperatures(text: str) -> tuple[float, ...]:
    values = tuple(float(x) for x in text.split(",") if x.strip())
    if not values or any(not 0.0 <= t <= 2.0 for t in values):
        raise argparse.ArgumentTypeError("temperatures in [0, 2], comma-separated")
    return values


def run_eval(args: argparse.Namespace) -> int:
    """One evaluation per temperature (a single one writes OUT directly); with several and
    --calibrate, their maps (each knowing its temperature) in one OUT/calibration.json."""
    temps = list(args.temperature)
    if len(temps) == 1 or args.replay:
        return _run_one(argparse.Namespace(**{**vars(args), "temperature": temps[0]}))
    rc, maps = 0, []
    for t in temps:
        one = argparse.Namespace(**{**vars(args), "temperature": t, "out": args.out / f"t{t:g}"})
        rc = max(rc, _run_one(one))
        if args.calibrate and (one.out / "calibration.json").exists():
            maps += list(Calibration.load(one.out / "calibration.json").maps)
    if args.calibrate and maps:
        args.out.mkdir(parents=True, exist_ok=True)
        Calibration(tuple(maps)).save(args.out / "calibration.json")
        print(f"wrote {args.out / 'calibration.json'}: the maps of temperatures {temps}")
    return rc


def _run_one(args: argparse.Namespace) -> int:
    # On a terminal, its width; piped or redirected, wide enough that the table is never cut
    # (rich would assume 80 columns).
    console = Console() if sys.stdout.isatty() else Console(width=200)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in ALL]
    if unknown:
        console.print(f"[red]unknown strategies:[/red] {', '.join(unknown)} (known: {ALL})")
        return 2
    unsupplied = {s: unsupplied_stats(s) for s in strategies if unsupplied_stats(s)}
    if unsupplied:
        for name, stats in unsupplied.items():
            console.print(
                f"[red]cannot evaluate {name}:[/red] stored samples carry no per-token "
                f"{', '.join(stats)}, which its scores read"
            )
        return 2
    budgets = sorted({int(x) for x in args.samples.split(",") if x.strip()})
    if args.max_tokens is not None and args.max_tokens < 1:
        console.print("[red]--max-tokens must be positive[/red]")
        return 2
    bad = [m for m in args.adaptive.split(",") if m.strip() and m.strip() not in ("beta", "window")]
    if bad:
        console.print(f"[red]unknown adaptive rule(s):[/red] {', '.join(bad)} (beta, window)")
        return 2
    if not budgets or budgets[0] < 1:
        console.print("[red]--samples needs positive budgets[/red]")
        return 2
    if args.pool is not None and args.pool < budgets[-1]:
        console.print(f"[red]--pool must be at least the largest budget ({budgets[-1]})[/red]")
        return 2
    try:
        args.own = _own_options(args.deepconf)
    except ValueError as exc:
        console.print(f"[red]--deepconf: {exc}[/red]")
        return 2
    started = time.perf_counter()
    for given in [args.replay, *(args.data or [])]:
        if given is not None and not Path(given).is_file():
            console.print(f"[red]no such file: {given}[/red]")
            return 2
    if args.replay:
        records = _replayed(args, strategies, console)
    elif args.data is None:
        console.print("[red]give --data FILE or --replay FILE[/red]")
        return 2
    else:
        records = _sampled(args, strategies, max(budgets[-1], args.pool or 0), console)
    if not records:
        console.print("[red]no problems to evaluate[/red]")
        return 1
    return _report(args, records, strategies, budgets, console, started)


def _own_options(deepconf: str) -> dict[str, StrategyOptions]:
    """Strategies' own options for the evaluation, by strategy name (`--deepconf`)."""
    return {"deepconf": _deepconf_options(deepconf)}


def _deepconf_options(text: str) -> DeepConfOptions:
    """WINDOW,WARMUP[,KEEP] into DeepConf options (empty: the defaults). The rows are offline;
    the warm-up is for the `deepconf+online` variant (a request refuses a warm-up offline, so
    the options are checked as online ones and then set offline)."""
    if not text.strip():
        return DeepConfOptions()
    parts = [x.strip() for x in text.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError("give WINDOW,WARMUP or WINDOW,WARMUP,KEEP")
    window, warmup = int(parts[0]), int(parts[1])
    keep = float(parts[2]) if len(parts) == 3 else DeepConfOptions().keep
    if window < 1 or warmup < 1 or not 0 < keep <= 1:
        raise ValueError("window and warm-up must be positive, keep in (0, 1]")
    online = DeepConfOptions(mode="online", window=window, warmup=warmup, keep=keep)
    return online.model_copy(update={"mode": "offline"})


def _replayed(args: argparse.Namespace, strategies: list[str], console: Console) -> list:
    """Records from a replay file; strategies it cannot serve are dropped (said)."""
    problems = read_replay(args.replay)[: args.limit]
    records = replay_records(problems)
    have = records[0].candidates[SAMPLING][0] if records else None
    for name in list(strategies):
        missing = [f for f in replay_fields(name) if have is None or getattr(have, f) is None]
        if missing:
            console.print(f"skipping {name}: the replay file has no per-sample {missing[0]}")
            strategies.remove(name)
    for name in [s for s in strategies if pool_of(s) != SAMPLING]:
        console.print(f"skipping {name}: it needs its own decoding, not stored samples")
        strategies.remove(name)
    for name in [s for s in strategies if live(s)]:
        console.print(f"skipping {name}: it asks the model again after sampling")
        strategies.remove(name)
    return records


def _problems(
    paths: list[Path], reader: str | None, limit: int | None, max_tokens: int | None = None
) -> list:
    """Every file's problems (the first `limit` of each, `max_tokens` each when given); with
    several files, each id is prefixed with its file's name so that ids stay distinct."""
    out = []
    for path in paths:
        got = load(path, reader)[:limit]
        if len(paths) > 1:
            got = [dataclasses.replace(p, id=f"{path.stem}:{p.id}") for p in got]
        if max_tokens is not None:
            got = [dataclasses.replace(p, max_tokens=max_tokens) for p in got]
        out += got
    return out


def _sampled(args: argparse.Namespace, strategies: list[str], n: int, console: Console) -> list:
    """Records sampled now, in process or from a server, one candidate pool per need."""
    problems_in = _problems(args.data, args.reader, args.limit, args.max_tokens)
    sampler = CandidateSource(args.url, args.temperature, args.seed, args.model)
    pools = sorted({pool_of(s) for s in strategies if not live(s)})
    ran = [s for s in strategies if live(s)]
    budgets = sorted({int(x) for x in args.samples.split(",") if x.strip()})

    async def go() -> list:
        await sampler.start()
        try:
            columns = (TextColumn("sampling"), BarColumn(), MofNCompleteColumn())
            with Progress(*columns, TimeRemainingColumn(), console=console) as bar:
                task = bar.add_task("sampling", total=len(problems_in))
                advance = lambda: bar.advance(task)  # noqa: E731
                voter = voter_for(strategies, args.own)
                return await sample_all(
                    problems_in, sampler, n, pools, advance, voter, ran, budgets
                )
        finally:
            await sampler.close()

    try:
        records = asyncio.run(go())
    except KeyboardInterrupt:
        records = []
    if len(records) < len(problems_in):
        console.print(f"stopped early: evaluating the {len(records)} finished problems")
    return records


def _report(
    args: argparse.Namespace,
    records: list,
    strategies: list[str],
    budgets: list[int],
    console: Console,
    started: float,
) -> int:
    methods = [m.strip() for m in args.adaptive.split(",") if m.strip()]
    trials = {
        r.id: evaluate(r, strategies, budgets, args.subsets, args.seed, methods, args.own)
        for r in records
    }
    rows = summarize(trials, args.seed, args.subsets)
    files = write_outputs(args.out, records, rows, trials)
    table = Table(
        "strategy",
        "N",
        "samples",
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
            f"{r.mean_samples:.1f}",
            str(r.subsets),
            f"{r.accuracy:.3f}",
            f"[{r.ci_low:.3f}, {r.ci_high:.3f}]",
            f"{r.mean_tokens:.0f}",
            f"{r.ece:.3f}",
            f"{r.brier:.3f}",
        )
    console.print(table)
    if args.budget is not None:
        console.print(_matched(rows, args.budget))
    if args.calibrate:
        fitted_at = None if args.replay else args.temperature  # replayed: not recorded
        files += _calibrated(trials, args.out, console, fitted_at)
    files.append(write_html(args.out, records, rows, [f for f in files if f.suffix == ".png"]))
    console.print(
        f"wrote {', '.join(str(f) for f in files)} in {time.perf_counter() - started:.0f} s"
    )
    return 0


def _matched(rows: list[SummaryRow], budget: float) -> Table:
    """Each strategy's row with the most generated tokens per problem within `budget`: the
    GenRM paper's question, which strategy is best at a fixed compute."""
    best: dict[str, SummaryRow] = {}
    for r in rows:
        if r.mean_tokens <= budget and (
            r.strategy not in best or r.mean_tokens > best[r.strategy].mean_tokens
        ):
            best[r.strategy] = r
    table = Table(
        "strategy", "N", "tokens", "accuracy", "95% CI",
        title=f"compute-matched: each strategy's largest budget within {budget:.0f} tokens",
    )  # fmt: skip
    for r in sorted(best.values(), key=lambda r: -r.accuracy):
        table.add_row(
            r.strategy,
            str(r.n),
            f"{r.mean_tokens:.0f}",
            f"{r.accuracy:.3f}",
            f"[{r.ci_low:.3f}, {r.ci_high:.3f}]",
        )
    return table


def _calibrated(trials: dict, out: Path, console: Console, temperature: float | None) -> list[Path]:
    """Fit the maps (at the samples' temperature), print their held-out effect, write
    calibration.json and the before/after reliability plot."""
    cal, rows = calibrate(trials, temperature)
    title = "calibration: fitted on half the problems, measured on the other half"
    columns = (
        "strategy",
        "N",
        "map",
        "fitted on",
        "held out",
        "ECE raw",
        "ECE calibrated",
        "95% CI",
        "noise floor (95th pct)",
    )
    table = Table(*columns, title=title)
    for r in rows:
        measured = (
            (
                f"{r.ece_raw:.3f}",
                f"{r.ece_calibrated:.3f}",
                f"[{r.ece_low:.3f}, {r.ece_high:.3f}]",
                f"{r.floor:.3f} ({r.floor_high:.3f})",
            )
            if r.held_out
            else ("-", "-", "-", "-")  # every problem fitted (none hash odd): nothing held out
        )
        table.add_row(r.strategy, str(r.n), r.method, str(r.fitted_on), str(r.held_out), *measured)
    console.print(table)
    console.print(
        "noise floor: the median ECE of a perfectly calibrated map on the same held-out "
        "confidences (outcomes drawn from them); at or under it, a miscalibration cannot be "
        "told from sampling noise on this many decisions"
    )
    path = out / "calibration.json"
    cal.save(path)
    return [path, calibration_plot(out, trials, cal)]
