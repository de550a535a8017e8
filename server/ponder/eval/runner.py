"""`ponder eval`: sample once per problem, evaluate every strategy and budget on subsets.

Per problem one request draws the largest N samples (with their texts, token counts, mean raw
logprob and self-certainty); each strategy at each budget n is then evaluated with the
project's own selection functions on `subsets` random size-n subsets of those samples (all of
them when n = N), as the papers do. CNTP needs its own decoding: its N decodes are drawn
separately and CNTP@n is CNTP + majority vote over subsets of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..answers import Answer, AnswerSpec, as_answer, equivalent
from ..strategies import REGISTRY, AdaptiveOptions, SelectOptions, StrategyOptions, Variant
from ..strategies.adaptive import settled
from ..strategies.base import extract_all
from ..types import Sample
from .records import Candidate, Decided, ProblemRecord, Trial, hash_id, to_samples


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
    if d is None or d.confidence is None:
        raise ValueError(f"strategy {strategy!r} makes no decision with a confidence to evaluate")
    got = d.answers[d.chosen] if d.answer is not None else None
    ok = bool(got is not None and gold is not None and equivalent(got, gold))
    tokens = float(sum(c.tokens for c in cands))
    return Trial(ok, float(d.confidence), tokens, got.text if got is not None else None)


SAMPLING = "sampling"


def pool_of(strategy: str) -> str:
    """Which stored candidates a strategy is evaluated on: selection strategies share one
    pool of plain samples; a decoding strategy (CNTP) needs its own decodes. A strategy that
    asks the model again after sampling (`live`) is run per budget instead: no pool."""
    return strategy if REGISTRY[strategy].kind == "decode" else SAMPLING


def live(strategy: str) -> bool:
    """Whether `ponder eval` runs the strategy itself per budget (usc, aggregate, verify: their
    decision needs the model again) instead of replaying it on stored samples."""
    return not REGISTRY[strategy].replayable


def live_trial(decided: Decided, fmt: str, gold: Answer | None) -> Trial:
    """A live decision graded against the gold (its answer read in the problem's format)."""
    got = as_answer(decided.answer, fmt) if decided.answer is not None else None
    ok = bool(got is not None and gold is not None and equivalent(got, gold))
    conf = math.nan if decided.confidence is None else float(decided.confidence)
    return Trial(ok, conf, decided.tokens, got.text if got is not None else None)


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
    rule = AdaptiveOptions(method=method)
    answers = extract_all(to_samples(pool), options.answer)
    used = len(pool)
    for k in range(rule.wave, len(pool) + rule.wave, rule.wave):
        if settled(answers[:k], rule):
            used = min(k, len(pool))
            break
    trial = judge(strategy, pool[:used], options, gold)
    return dataclasses.replace(trial, samples=used)


def variant_trial(
    strategy: str, variant: Variant, pool: Sequence[Candidate], gold: Answer | None
) -> Trial:
    """A strategy's variant replayed on stored samples in their stored order (e.g. DeepConf
    online: the first `warmup` traces set the bar, each later one is cut where the engine
    would have stopped it); the tokens counted are those generated up to each cut."""
    cut = variant.replay(to_samples(pool), variant.options)
    trial = judge(strategy, pool, variant.options, gold, cut)
    spent = sum(
        c.tokens * (s.n_tokens / len(c.confidence)) if c.confidence else c.tokens
        for c, s in zip(pool, cut, strict=True)
    )
    return dataclasses.replace(trial, tokens=float(spent), samples=len(pool))


def _mean_known(values: Sequence[float]) -> float | None:
    """The mean of the values that are not NaN (None: there are none)."""
    known = [v for v in values if not math.isnan(v)]
    return float(np.mean(known)) if known else None


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
    own: Mapping[str, StrategyOptions] | None = None,
) -> dict[str, dict[int, list[Trial]]]:
    """Every strategy (with its own options from `own`) at every budget on this problem's
    stored candidates; with `adaptive` methods, also each selection strategy with that
    stopping rule under the largest budget (rows named `strategy+method`); and each variant
    the strategy names for the largest budget (`Strategy.variants`, rows `strategy+variant`,
    e.g. `deepconf+online`). A budget below the pool's size is evaluated on `count` random
    subsets of it, the pool itself once."""
    spec = AnswerSpec(record.format)  # type: ignore[arg-type]
    gold = as_answer(record.gold, record.format)
    record.gold_parsed = gold.text if gold is not None else None
    out: dict[str, dict[int, list[Trial]]] = {}
    for strategy in strategies:
        if live(strategy):
            decided = record.live.get(strategy, {})
            out[strategy] = {
                n: [live_trial(decided[n], record.format, gold)] for n in budgets if n in decided
            }
            continue
        pool = record.candidates.get(pool_of(strategy), [])
        if not pool:
            continue
        options = SelectOptions(answer=spec, own=(own or {}).get(strategy))
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
        if not 0 < top <= len(pool):
            continue
        # the largest budget's variants and adaptive rules, on subsets of a larger pool too
        # (`ponder eval --pool`); a subset's samples in their stored order
        tops = [[pool[i] for i in idx] for idx in subsets(len(pool), top, count, rng)]
        for variant in REGISTRY[strategy].variants(options, top):
            trials = [variant_trial(strategy, variant, t, gold) for t in tops]
            out[f"{strategy}+{variant.name}"] = {top: trials}
        if REGISTRY[strategy].kind == "select":
            for method in adaptive:
                trials = [adaptive_trial(strategy, method, t, options, gold) for t in tops]
                out[f"{strategy}+{method}"] = {top: trials}
    record.results = {
        s: {
            n: {
                "accuracy": float(np.mean([t.correct for t in ts])),
                "confidence": _mean_known([t.confidence for t in ts]),
                "tokens": float(np.mean([t.tokens for t in ts])),
                "answers": [t.answer for t in ts],
            }
            for n, ts in per.items()
        }
        for s, per in out.items()
    }
    return out
