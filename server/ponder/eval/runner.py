"""`ponder eval`: sample once per problem, evaluate every strategy and budget on subsets.

Per problem one request draws the largest N samples (with their texts, token counts, mean raw
logprob and self-certainty); each strategy at each budget n is then evaluated with the
project's own selection functions on `subsets` random size-n subsets of those samples (all of
them when n = N), as the papers do. CNTP needs its own decoding: its N decodes are drawn
separately and CNTP@n is CNTP + majority vote over subsets of them.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..answers import Answer, AnswerSpec, as_answer, equivalent
from ..calibration import Calibration, fit
from ..strategies import REGISTRY, AdaptiveOptions, DeepConfOptions, SelectOptions, deepconf
from ..strategies.adaptive import settled
from ..strategies.base import extract_all
from ..types import Sample
from .datasets import Problem, ReplayProblem
from .metrics import bootstrap_ci, brier, ece, reliability


@dataclass
class Candidate:
    """One stored sample: what selection needs, and what it cost."""

    text: str
    tokens: float
    mean_logprob: float | None = None
    self_certainty: float | None = None
    confidence: list[float] | None = None
    """DeepConf's per-token confidence (stored per token: the online rule is replayed on it)."""


@dataclass
class ProblemRecord:
    id: str
    gold: str
    format: str
    candidates: dict[str, list[Candidate]] = field(default_factory=dict)  # by pool_of()
    results: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    gold_parsed: str | None = None
    """The gold answer as the grader reads it (problems.jsonl), next to each chosen answer."""


@dataclass(frozen=True)
class Trial:
    correct: bool
    confidence: float
    tokens: float
    answer: str | None = None
    """The chosen answer as extracted (None: no sample had one), for auditing the grader."""
    samples: int = 0
    """Samples used, when an adaptive rule stopped early (0: the budget's own N)."""


def to_samples(cands: Sequence[Candidate]) -> list[Sample]:
    """Samples that carry exactly what the selection functions read (text, mean logprob, mean
    self-certainty) as one-element stat arrays, and DeepConf's per-token confidence (then one
    token id per stored token, so its stop rule can be replayed)."""
    out = []
    for i, c in enumerate(cands):
        lp = np.array([c.mean_logprob if c.mean_logprob is not None else 0.0], np.float32)
        sc = np.array([c.self_certainty if c.self_certainty is not None else 0.0], np.float32)
        conf = np.asarray(c.confidence or [], np.float32)
        zero = np.zeros(1, np.float32)
        s = Sample(i, c.text, list(range(conf.size)), "stop", lp, sc, lp.copy(), zero)
        s.confidence = conf
        out.append(s)
    return out


def judge(
    strategy: str,
    cands: Sequence[Candidate],
    options: SelectOptions,
    gold: Answer | None,
    samples: list[Sample] | None = None,
) -> Trial:
    """Run one strategy on one set of candidates (or the samples made of them) and grade its
    answer against the gold."""
    samples = to_samples(cands) if samples is None else samples
    d = REGISTRY[strategy].decide(samples, options)
    if d is None:
        raise ValueError(f"strategy {strategy!r} makes no decision to evaluate")
    got = d.answers[d.chosen] if d.answer is not None else None
    ok = bool(got is not None and gold is not None and equivalent(got, gold))
    tokens = float(sum(c.tokens for c in cands))
    return Trial(ok, float(d.confidence), tokens, got.text if got is not None else None)


SAMPLING = "sampling"


def pool_of(strategy: str) -> str:
    """Which stored candidates a strategy is evaluated on: selection strategies share one
    pool of plain samples; a decoding strategy (CNTP) needs its own decodes."""
    return strategy if REGISTRY[strategy].kind == "decode" else SAMPLING


_CANDIDATE_FIELD = {
    "logprob": "mean_logprob",
    "kl_uniform": "self_certainty",
    "confidence": "confidence",
}
"""The stored candidate field that carries each per-token stat (as its mean; DeepConf's
confidence per token)."""


def replay_fields(strategy: str) -> list[str]:
    """Candidate fields a strategy's scores need from stored samples (its `stats`)."""
    stats = REGISTRY[strategy].stats
    return [_CANDIDATE_FIELD[s] for s in sorted(stats) if s in _CANDIDATE_FIELD]


def unsupplied_stats(strategy: str) -> list[str]:
    """Per-token stats a selection strategy's scores read that stored candidates do not carry
    (its decision would see zeros): `ponder eval` refuses the strategy, naming them."""
    if pool_of(strategy) != SAMPLING:
        return []
    return sorted(REGISTRY[strategy].stats - _CANDIDATE_FIELD.keys())


def adaptive_trial(
    strategy: str,
    method: str,
    pool: Sequence[Candidate],
    options: SelectOptions,
    gold: Answer | None,
) -> Trial:
    """The adaptive rule replayed on stored samples in their stored order: waves of 4 until
    `settled` or the pool's end, then the strategy on the samples used."""
    rule = AdaptiveOptions(method)  # type: ignore[arg-type]
    answers = extract_all(to_samples(pool), options.answer)
    used = len(pool)
    for k in range(rule.wave, len(pool) + rule.wave, rule.wave):
        if settled(answers[:k], rule):
            used = min(k, len(pool))
            break
    trial = judge(strategy, pool[:used], options, gold)
    return dataclasses.replace(trial, samples=used)


def online_trial(
    strategy: str, pool: Sequence[Candidate], options: SelectOptions, gold: Answer | None
) -> Trial:
    """DeepConf online replayed on stored traces in their stored order: the first `warmup`
    set the bar, each later one is cut where the engine would have stopped it, and the
    tokens counted are those generated up to the cut."""
    cut = deepconf.simulate_online(to_samples(pool), options.deepconf)
    trial = judge(strategy, pool, options, gold, cut)
    spent = sum(
        c.tokens * (s.n_tokens / len(c.confidence)) if c.confidence else c.tokens
        for c, s in zip(pool, cut, strict=True)
    )
    return dataclasses.replace(trial, tokens=float(spent), samples=len(pool))


def subsets(n_total: int, n: int, count: int, rng: np.random.Generator) -> list[list[int]]:
    """`count` random size-n subsets (sorted indices); the whole set once when n >= n_total."""
    if n >= n_total:
        return [list(range(n_total))]
    return [sorted(rng.choice(n_total, size=n, replace=False).tolist()) for _ in range(count)]


def evaluate(
    record: ProblemRecord,
    strategies: Sequence[str],
    budgets: Sequence[int],
    count: int,
    seed: int,
    adaptive: Sequence[str] = (),
    deepconf_options: DeepConfOptions | None = None,
) -> dict[str, dict[int, list[Trial]]]:
    """Every strategy at every budget on this problem's stored candidates; with `adaptive`
    methods, also each selection strategy with that stopping rule under the largest budget
    (rows named `strategy+method`); DeepConf also online under the largest budget, when it
    exceeds the warm-up (row `deepconf+online`)."""
    dc = deepconf_options or DeepConfOptions()
    options = SelectOptions(answer=AnswerSpec(record.format), deepconf=dc)  # type: ignore[arg-type]
    gold = as_answer(record.gold, record.format)
    record.gold_parsed = gold.text if gold is not None else None
    out: dict[str, dict[int, list[Trial]]] = {}
    for strategy in strategies:
        pool = record.candidates.get(pool_of(strategy), [])
        if not pool:
            continue
        rng = np.random.default_rng([seed, len(record.id), hash_id(record.id)])
        per: dict[int, list[Trial]] = {}
        for n in budgets:
            if n > len(pool):
                continue
            per[n] = [
                judge(strategy, [pool[i] for i in idx], options, gold)
                for idx in subsets(len(pool), n, count, rng)
            ]
        out[strategy] = per
        top = budgets[-1] if budgets else 0
        if strategy == deepconf.NAME and dc.warmup < top <= len(pool):
            online = dataclasses.replace(options, deepconf=dataclasses.replace(dc, mode="online"))
            out[f"{strategy}+online"] = {top: [online_trial(strategy, pool[:top], online, gold)]}
        if REGISTRY[strategy].kind == "select" and budgets and budgets[-1] <= len(pool):
            for method in adaptive:
                top = budgets[-1]
                out[f"{strategy}+{method}"] = {
                    top: [adaptive_trial(strategy, method, pool[:top], options, gold)]
                }
    record.results = {
        s: {
            n: {
                "accuracy": float(np.mean([t.correct for t in ts])),
                "confidence": float(np.mean([t.confidence for t in ts])),
                "tokens": float(np.mean([t.tokens for t in ts])),
                "answers": [t.answer for t in ts],
            }
            for n, ts in per.items()
        }
        for s, per in out.items()
    }
    return out


def hash_id(text: str) -> int:
    """A stable (not salted) hash for seeding per-problem subset draws."""
    h = 1469598103934665603
    for ch in text.encode():
        h = ((h ^ ch) * 1099511628211) % 2**63
    return h


@dataclass
class SummaryRow:
    strategy: str
    n: int
    subsets: int
    problems: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_tokens: float
    ece: float
    brier: float
    mean_samples: float
    """Samples used per decision (below N for adaptive rows that stopped early)."""


def summarize(
    trials: dict[str, dict[str, dict[int, list[Trial]]]], seed: int, count: int
) -> list[SummaryRow]:
    """Rows per strategy and budget: accuracy (+ bootstrap 95% interval over problems), mean
    generated tokens per problem, ECE (10 bins) and Brier over all subset decisions."""
    by: dict[tuple[str, int], list[list[Trial]]] = defaultdict(list)
    for per_problem in trials.values():
        for strategy, per in per_problem.items():
            for n, ts in per.items():
                by[(strategy, n)].append(ts)
    rows = []
    for (strategy, n), problems in sorted(by.items()):
        acc = [float(np.mean([t.correct for t in ts])) for ts in problems]
        mean, lo, hi = bootstrap_ci(acc, seed=seed)
        flat = [t for ts in problems for t in ts]
        conf = [t.confidence for t in flat]
        corr = [float(t.correct) for t in flat]
        rows.append(
            SummaryRow(
                strategy,
                n,
                max(len(ts) for ts in problems),
                len(problems),
                mean,
                lo,
                hi,
                float(np.mean([t.tokens for t in flat])),
                ece(conf, corr),
                brier(conf, corr),
                float(np.mean([t.samples or n for t in flat])),
            )
        )
    return rows


@dataclass
class CalibrationRow:
    """A fitted map's effect on the held-out half of the problems."""

    strategy: str
    n: int
    fitted_on: int
    held_out: int
    ece_raw: float
    ece_calibrated: float


def calibrate(
    trials: dict[str, dict[str, dict[int, list[Trial]]]],
) -> tuple[Calibration, list[CalibrationRow]]:
    """Per strategy and budget, fit a map on the problems whose id hashes even and measure
    ECE before and after on the others (each problem's subset decisions stay together)."""
    fit_on: dict[tuple[str, int], list[Trial]] = defaultdict(list)
    held: dict[tuple[str, int], list[Trial]] = defaultdict(list)
    for pid, per_problem in trials.items():
        side = fit_on if hash_id(pid) % 2 == 0 else held
        for strategy, per in per_problem.items():
            for n, ts in per.items():
                side[(strategy, n)] += ts
    maps, rows = [], []
    for (strategy, n), ts in sorted(fit_on.items()):
        m = fit(strategy, n, [t.confidence for t in ts], [t.correct for t in ts])
        maps.append(m)
        test = held.get((strategy, n), [])
        raw = [t.confidence for t in test]
        right = [float(t.correct) for t in test]
        rows.append(
            CalibrationRow(
                strategy,
                n,
                len(ts),
                len(test),
                ece(raw, right) if test else float("nan"),
                ece([m(c) for c in raw], right) if test else float("nan"),
            )
        )
    return Calibration(tuple(maps)), rows


def calibration_plot(
    out: Path, trials: dict[str, dict[str, dict[int, list[Trial]]]], cal: Calibration
) -> Path:
    """calibration.png: per strategy at its largest budget, the held-out half's reliability
    (accuracy per confidence bin) before and after its fitted map, with ECE in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held: dict[tuple[str, int], list[Trial]] = defaultdict(list)
    for pid, per_problem in trials.items():
        if hash_id(pid) % 2 == 1:
            for strategy, per in per_problem.items():
                for n, ts in per.items():
                    held[(strategy, n)] += ts
    tops: dict[str, int] = {}
    for strategy, n in held:
        tops[strategy] = max(n, tops.get(strategy, 0))
    names = sorted(s for s in tops if cal.find(s, tops[s]) is not None)
    fig, axes = _panels(plt, len(names))
    for ax, s in zip(axes, names, strict=False):
        ts = held[(s, tops[s])]
        m = cal.find(s, tops[s])
        assert m is not None
        right = [float(t.correct) for t in ts]
        raw = [t.confidence for t in ts]
        fitted = [m(c) for c in raw]
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        for conf, label, style in ((raw, "raw", "o-"), (fitted, "calibrated", "s-")):
            bins = reliability(conf, right)
            ax.plot(
                [b[0] for b in bins],
                [b[1] for b in bins],
                style,
                label=f"{label} (ECE {ece(conf, right):.3f})",
            )
        ax.set_title(f"{s} @{tops[s]}, held out", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "calibration.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(
    out: Path,
    records: Sequence[ProblemRecord],
    rows: Sequence[SummaryRow],
    trials: dict[str, dict[str, dict[int, list[Trial]]]],
) -> list[Path]:
    """problems.jsonl, summary.csv and the three PNG plots; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "problems.jsonl", out / "summary.csv"]
    with files[0].open("w") as fh:
        for r in records:
            fh.write(
                json.dumps(
                    {
                        "id": r.id,
                        "gold": r.gold,
                        "gold_parsed": r.gold_parsed,
                        "format": r.format,
                        "candidates": {k: [asdict(c) for c in v] for k, v in r.candidates.items()},
                        "results": r.results,
                    }
                )
                + "\n"
            )
    with files[1].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(SummaryRow.__dataclass_fields__))
        for row in rows:
            w.writerow([f"{v:.4f}" if isinstance(v, float) else v for v in asdict(row).values()])
    files += _plots(out, rows, trials)
    return files


def _plots(
    out: Path, rows: Sequence[SummaryRow], trials: dict[str, dict[str, dict[int, list[Trial]]]]
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = sorted({r.strategy for r in rows})
    paths = []
    for name, xkey, xlabel in (
        ("accuracy_vs_n.png", "n", "samples N"),
        ("accuracy_vs_tokens.png", "mean_tokens", "generated tokens per problem"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for s in strategies:
            rs = sorted((r for r in rows if r.strategy == s), key=lambda r: r.n)
            xs = [getattr(r, xkey) for r in rs]
            ax.plot(xs, [r.accuracy for r in rs], marker="o", label=s)
            ax.fill_between(xs, [r.ci_low for r in rs], [r.ci_high for r in rs], alpha=0.15)
        if xkey == "n":
            ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)
    fig, axes = _panels(plt, len(strategies))
    for ax, s in zip(axes, strategies, strict=False):
        top = max(r.n for r in rows if r.strategy == s)
        flat = [t for per in trials.values() for t in per.get(s, {}).get(top, [])]
        bins = reliability([t.confidence for t in flat], [float(t.correct) for t in flat])
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.bar([b[0] for b in bins], [b[1] for b in bins], width=0.08, alpha=0.7)
        ax.set_title(f"{s} @{top}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=120)
    plt.close(fig)
    paths.append(out / "reliability.png")
    return paths


def _panels(plt: Any, n: int, per_row: int = 4) -> tuple[Any, list[Any]]:
    """A figure of n square panels, at most `per_row` to a row; unused panels hidden."""
    cols = max(min(n, per_row), 1)
    rows = max(math.ceil(n / per_row), 1)
    fig, grid = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def replay_records(problems: Sequence[ReplayProblem]) -> list[ProblemRecord]:
    return [
        ProblemRecord(
            p.id,
            p.gold,
            p.format,
            {
                "sampling": [
                    Candidate(
                        t,
                        float(p.tokens[i]) if i < len(p.tokens) else math.nan,
                        p.mean_logprob[i] if p.mean_logprob else None,
                        p.self_certainty[i] if p.self_certainty else None,
                        p.confidence[i] if p.confidence else None,
                    )
                    for i, t in enumerate(p.texts)
                ]
            },
        )
        for p in problems
    ]


class CandidateSource:
    """Draws the candidates of a problem: in process on an engine, or from a running server."""

    def __init__(self, url: str | None, temperature: float, seed: int, model: str | None) -> None:
        self.url = url
        self.temperature = temperature
        self.seed = seed
        self.model = model
        self._engine: Any = None
        self._client: Any = None

    async def start(self) -> None:
        if self.url:
            from ponder_client import AsyncPonder

            self._client = AsyncPonder(self.url, timeout=3600, model=self.model)
        else:
            from ..config import Settings
            from ..engines import create_engine

            settings = Settings(model=self.model) if self.model else Settings()
            self._engine = create_engine(settings)
            await self._engine.start()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._engine is not None:
            await self._engine.close()

    async def draw(
        self, p: Problem, k: int, n: int, pool: str, confidence_k: int = 0
    ) -> list[Candidate]:
        """n candidates of problem k for `pool` (see pool_of), through the runner in
        process or a server over HTTP; with `confidence_k`, each with DeepConf's per-token
        confidence (top-k logprobs; the samples are the same)."""
        seed = self.seed + 100_003 * k
        if self._client is not None:
            return await self._draw_http(p, n, pool, seed, confidence_k)
        from .. import runner
        from ..strategies import Job
        from ..types import SamplingParams

        eng = self._engine
        ids = (
            eng.render_chat([{"role": "user", "content": p.prompt}])
            if p.kind == "chat"
            else eng.tokenize(p.prompt)
        )
        params = SamplingParams(
            max_tokens=p.max_tokens,
            temperature=self.temperature,
            seed=seed,
            stop=p.stop,
            confidence_top_k=confidence_k if pool == SAMPLING else 0,
        )
        strategy = "none" if pool == SAMPLING else pool
        out = await runner.run(Job(strategy, ids, params, n, choices=n), eng)
        gen = out.generation
        extra = gen.unused_tokens / max(len(gen.samples), 1)  # trials, spread evenly (as HTTP)
        return [
            Candidate(
                s.text, s.n_tokens + extra, s.mean_logprob, s.self_certainty, _rounded(s.confidence)
            )
            for s in gen.samples
        ]

    async def _draw_http(
        self, p: Problem, n: int, pool: str, seed: int, confidence_k: int
    ) -> list[Candidate]:
        call = self._client.chat if p.kind == "chat" else self._client.complete
        voter = deepconf.NAME if confidence_k else "majority_vote"  # same samples, + confidence
        strategy = voter if pool == SAMPLING else pool
        r = await call(
            p.prompt,
            strategy=strategy,
            samples=n,
            include_candidates=True,
            max_tokens=p.max_tokens,
            seed=seed,
            temperature=self.temperature,
            stop=list(p.stop) or None,
            answer={"format": p.format},
            **({"deepconf": {"top_k": confidence_k}} if strategy == deepconf.NAME else {}),
        )
        cands = r.candidates or []
        per_token_extra = (r.usage.completion_tokens - sum(c.tokens for c in cands)) / max(
            len(cands), 1
        )
        return [
            Candidate(
                c.text,
                c.tokens + per_token_extra,
                c.mean_logprob,
                c.self_certainty,
                c.token_confidence,
            )
            for c in cands
        ]


def _rounded(confidence: np.ndarray) -> list[float] | None:
    """Per-token confidences as stored (4 decimals keep problems.jsonl small)."""
    return [round(float(c), 4) for c in confidence] if confidence.size else None


async def sample_all(
    problems: Sequence[Problem],
    sampler: CandidateSource,
    n: int,
    pools: Sequence[str],
    progress: Any = None,
    confidence_k: int = 0,
) -> list[ProblemRecord]:
    """Draw every problem's candidates for each pool (`pool_of` the strategies evaluated);
    Ctrl-C stops and keeps the problems finished so far."""
    records: list[ProblemRecord] = []
    try:
        for k, p in enumerate(problems):
            rec = ProblemRecord(p.id, p.gold, p.format)
            for pool in pools:
                rec.candidates[pool] = await sampler.draw(p, k, n, pool, confidence_k)
            records.append(rec)
            if progress is not None:
                progress()
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    return records
