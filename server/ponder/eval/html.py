"""`ponder eval`'s HTML report (report.html beside the PNGs): the summary table, the plots, and
per problem its gold answer, each strategy's chosen answer at its largest budget, and the
candidates with their extracted answers, the chosen ones highlighted. One self-contained
file (styles inline, the plots by relative path), viewable offline; every text from a model
or a data file is escaped."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..answers import AnswerSpec, as_answer, equivalent, extract_many
from .records import ProblemRecord
from .summary import SummaryRow

MAX_TEXT = 2000
"""Characters of a candidate's text shown (the whole text is in problems.jsonl)."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1d2430; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 0.2rem 0.5rem; text-align: left;
  vertical-align: top; }
img { max-width: 48%; margin: 0.3rem; border: 1px solid #e5e7eb; }
details { margin: 0.3rem 0; } summary { cursor: pointer; }
.ok { color: #15803d; } .wrong { color: #b91c1c; }
tr.chosen { background: #ecfdf3; }
td.text { white-space: pre-wrap; max-width: 60rem; font-family: ui-monospace, monospace;
  font-size: 0.8rem; }
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _summary(rows: Sequence[SummaryRow]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in ("strategy", "N", "samples", "accuracy", "95% CI", "tokens", "ECE", "Brier")
    )
    body = "".join(
        f"<tr><td>{_e(r.strategy)}</td><td>{r.n}</td><td>{r.mean_samples:.1f}</td>"
        f"<td>{r.accuracy:.3f}</td><td>[{r.ci_low:.3f}, {r.ci_high:.3f}]</td>"
        f"<td>{r.mean_tokens:.0f}</td><td>{r.ece:.3f}</td><td>{r.brier:.3f}</td></tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chosen(record: ProblemRecord) -> dict[str, Any]:
    """Each strategy's chosen answer at its largest budget (its first subset's)."""
    out: dict[str, Any] = {}
    for strategy, by_n in record.results.items():
        if not by_n:
            continue
        top = by_n[max(by_n, key=int)]
        answers = top.get("answers") or []
        out[strategy] = answers[0] if answers else None
    return out


def _problem(record: ProblemRecord) -> str:
    spec = AnswerSpec(record.format)  # type: ignore[arg-type]
    gold = as_answer(record.gold_parsed or record.gold, record.format)
    chosen = _chosen(record)

    def right(answer: str | None) -> bool:
        got = as_answer(answer, record.format) if answer is not None else None
        return bool(got is not None and gold is not None and equivalent(got, gold))

    picks = "".join(
        f"<li>{_e(s)}: <span class='{'ok' if right(a) else 'wrong'}'>{_e(a)}</span></li>"
        for s, a in chosen.items()
    )
    ok = sum(right(a) for a in chosen.values())
    picked = {s: as_answer(a, record.format) for s, a in chosen.items() if a is not None}
    rows = []
    for pool, cands in record.candidates.items():
        answers = extract_many([c.text for c in cands], spec)
        for i, (c, a) in enumerate(zip(cands, answers, strict=True)):
            text = a.text if a is not None else None
            by = [s for s, pick in picked.items() if a is not None and pick and equivalent(pick, a)]
            cls = " class='chosen'" if by else ""
            rows.append(
                f"<tr{cls}><td>{_e(pool)} {i}</td><td class='{'ok' if right(text) else 'wrong'}'>"
                f"{_e(text)}</td><td>{_e(', '.join(by))}</td><td>{c.tokens:.0f}</td>"
                f"<td class='text'>{_e(c.text[:MAX_TEXT])}</td></tr>"
            )
    table = (
        "<table><thead><tr><th>candidate</th><th>answer</th><th>chosen by</th><th>tokens</th>"
        f"<th>text</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        if rows
        else ""
    )
    return (
        f"<details><summary>{_e(record.id)}: gold {_e(record.gold_parsed or record.gold)} "
        f"— {ok} of {len(chosen)} strategies right</summary>"
        f"<ul>{picks}</ul>{table}</details>"
    )


def write_html(
    out: Path, records: Sequence[ProblemRecord], rows: Sequence[SummaryRow], plots: Sequence[Path]
) -> Path:
    """report.html in `out`; returns its path."""
    images = "".join(f"<img src='{_e(p.name)}' alt='{_e(p.stem)}'>" for p in plots)
    problems = "".join(_problem(r) for r in records)
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>ponder eval: {len(records)} problems</title><style>{_STYLE}</style></head><body>"
        f"<h1>ponder eval: {len(records)} problems</h1>"
        f"<h2>Summary</h2>{_summary(rows)}<h2>Plots</h2><div>{images}</div>"
        "<h2>Problems</h2><p>Each problem's candidates with the answer read from each; a row "
        "is highlighted when its answer is one a strategy chose at its largest budget.</p>"
        f"{problems}</body></html>"
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
