"""A vote per field of a JSON answer (`answer: {"format": "json", "vote": "field"}`): every
leaf path (JSON pointer) is voted on separately among the samples whose reply parsed, and the
answer is assembled from the per-path winners. docs/strategies.md, "Votes over JSON"."""

from __future__ import annotations

import collections
import json
from collections.abc import Sequence

from ..answers import Answer
from ..answers.jsonanswers import assemble, canonical, leaves
from ..types import Sample
from .base import Decision, TallyEntry, best_member, group_answers


def field_vote(name: str, samples: Sequence[Sample], answers: list[Answer | None]) -> Decision:
    """Per path: the value most samples gave (ties: the first given); a path is in the answer
    when more than half of the parsed samples have it. Its share = its winner's votes / all N
    samples (unparsed ones count against it). Confidence = the lowest share among the paths
    kept (the answer is only as sure as its least sure field). The text shown is the sample
    that agrees with the most winners (ties: highest mean logprob)."""
    n = len(samples)
    parsed = [(i, leaves(json.loads(a.text))) for i, a in enumerate(answers) if a is not None]
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    first: dict[tuple[str, str], int] = {}
    for i, fields in parsed:
        for path, value in fields.items():
            counts[path][value] += 1
            first.setdefault((path, value), i)
    winners: dict[str, tuple[str, int]] = {}
    for path, c in counts.items():
        if sum(c.values()) * 2 <= len(parsed):
            continue  # most samples do not have this field
        value = max(c, key=lambda v: (c[v], -first[(path, v)]))
        winners[path] = (value, c[value])
    mean_lp = [s.mean_logprob for s in samples]
    unanswered = sum(a is None for a in answers)
    groups = group_answers(answers)
    ranked = sorted(groups, key=lambda g: -len(g.members))
    tally = [
        TallyEntry(g.answer.text, len(g.members), float(len(g.members)), len(g.members) / n)
        for g in ranked
    ]
    if not winners:
        chosen = best_member(range(n), mean_lp)
        return Decision(name, chosen, None, 0.0, tally, [chosen], answers, unanswered)
    agree = [0.0] * n
    for i, fields in parsed:
        agree[i] = sum(fields.get(p) == v for p, (v, _) in winners.items())
    key = [agree[i] + (mean_lp[i] * 1e-9) for i in range(n)]  # ties: the likelier text
    chosen = best_member([i for i, _ in parsed], key)
    answer = canonical(assemble({p: v for p, (v, _) in winners.items()}))
    shares = {p: k / n for p, (_, k) in winners.items()}
    notes: dict[str, object] = {
        "fields": {
            p: {"value": json.loads(v), "votes": k, "share": k / n}
            for p, (v, k) in sorted(winners.items())
        }
    }
    others = [best_member(g.members, mean_lp) for g in ranked if chosen not in g.members]
    ranking = [chosen, *others]
    return Decision(
        strategy=name,
        chosen=chosen,
        answer=answer,
        confidence=min(shares.values()),
        tally=tally,
        ranking=ranking,
        answers=answers,
        unanswered=unanswered,
        notes=notes,
    )
