"""What `ponder eval` writes: problems.jsonl, summary.csv, the accuracy and reliability plots,
and the calibration plot (matplotlib, headless)."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..calibration import Calibration
from .metrics import ece, reliability
from .records import ProblemRecord, Trial, hash_id
from .summary import SummaryRow


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
    names = sorted(s for s in tops if cal.at(s, tops[s]) is not None)
    fig, axes = _panels(plt, len(names))
    for ax, s in zip(axes, names, strict=False):
        ts = held[(s, tops[s])]
        m = cal.at(s, tops[s])
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
