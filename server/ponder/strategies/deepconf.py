"""DeepConf (Fu et al. 2025, "Deep Think with Confidence"), docs/strategies.md section 6.

Token confidence C_t = minus the mean raw logprob of the k most probable tokens at step t
(engines compute it where the logits are: `SamplingParams.confidence_top_k`). A trace's
confidence is its lowest mean over sliding `window`-token windows (the whole trace's mean when
it is shorter than a window, as the authors' `compute_least_grouped`).

- offline: draw N traces; those at or above the (1 - keep) quantile of the N confidences
  vote, each with its confidence as the weight;
- online: draw `warmup` traces; the (1 - keep) quantile of their confidences is the bar;
  draw the rest with the engine stop rule `stop_confidence = (window, bar)`, so a trace
  whose window mean falls below the bar stops without generating the rest. Warm-up traces
  below the bar and stopped traces do not vote (the authors' `deepconf-online.py`).

`select` is pure: the online bar is recomputed from the first `warmup` samples, so a stored
run replays to the same decision (and `simulate_online` replays the stop rule on traces
drawn without it, which is what `ponder eval` does).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..errors import InvalidRequest, UnsupportedRequest
from ..types import Engine, Generation, Sample, SamplingParams, confidence_stop
from .base import (
    Decision,
    SelectOptions,
    StrategyOptions,
    TallyEntry,
    best_member,
    extract_all,
    group_answers,
)
from .job import Decided, Hooks, Job, Kind, Variant
from .strategy import Defaults, alone

NAME = "deepconf"
STOPPED = "confidence"
"""finish_reason of a trace the engine stopped under the bar."""


class DeepConfOptions(StrategyOptions):
    """`ponder.deepconf`: token confidence from the top `top_k` raw logprobs, trace confidence
    = the lowest mean over sliding `window`-token windows. `keep` is eta, the share of traces
    kept: offline, traces at or above the (1 - keep) quantile of all traces' confidences vote;
    online, `warmup` traces set that quantile as the bar and every later trace is stopped by
    the engine once a window's mean falls below it."""

    mode: Literal["offline", "online"] = "offline"
    top_k: int = Field(20, ge=1, le=20, description="logprobs per token in its confidence")
    window: int = Field(2048, ge=1, le=131072, description="tokens per sliding window")
    keep: float = Field(0.9, gt=0.0, le=1.0, description="eta: the share of traces kept")
    warmup: int = Field(16, ge=1, le=1024, description="online: traces that set the bar")

    @model_validator(mode="after")
    def _own_parameters(self) -> DeepConfOptions:
        if self.mode == "offline" and "warmup" in self.model_fields_set:
            raise ValueError("`warmup` applies to mode 'online' only")
        return self

    def drawn(self) -> DeepConfOptions:
        """Only `top_k` shapes the samples drawn (offline); the rest is replayed on them."""
        return DeepConfOptions(top_k=self.top_k)


def trace_confidence(confidence: Sequence[float] | np.ndarray, window: int) -> float:
    """The lowest mean over sliding `window`-token windows; the mean of all tokens when the
    trace is shorter than a window; 0 for an empty trace."""
    c = np.asarray(confidence, dtype=np.float64)
    if c.size == 0:
        return 0.0
    if c.size < window:
        return float(c.mean())
    sums = np.convolve(c, np.ones(window), mode="valid")
    return float(sums.min() / window)


def bar(confidences: Sequence[float], keep: float) -> float:
    """The (1 - keep) quantile (linear interpolation, as numpy and the authors): keeping
    the traces at or above it keeps the top `keep` share."""
    return float(np.percentile(np.asarray(confidences, dtype=np.float64), 100.0 * (1.0 - keep)))


def simulate_online(samples: Sequence[Sample], opts: DeepConfOptions) -> list[Sample]:
    """Online mode replayed on traces drawn without the stop rule (same seeds, so the same
    tokens up to the stop): each trace after the warm-up is cut where the engine would have
    stopped it, finish_reason "confidence"."""
    warm = [trace_confidence(s.confidence, opts.window) for s in samples[: opts.warmup]]
    if not warm:
        return list(samples)
    threshold = bar(warm, opts.keep)
    out = list(samples[: opts.warmup])
    for s in samples[opts.warmup :]:
        end = confidence_stop(s.confidence, opts.window, threshold)
        if end is None or end >= s.n_tokens:
            out.append(s)  # the rule fired on the last token: the trace had ended anyway
            continue
        out.append(_cut(s, end))
    return out


def _cut(s: Sample, end: int) -> Sample:
    text = "".join(s.tokens_text[:end]) if s.tokens_text else s.text
    return s.head(end, STOPPED, text)


def select(samples: Sequence[Sample], options: SelectOptions) -> Decision:
    """Confidence-filtered, confidence-weighted vote. Winner = the group with the most kept
    weight (ties: first member earliest); text shown = its kept member with the highest
    trace confidence. Confidence = the weight of every trace with the winning answer / the
    weight of every trace drawn (filtered, stopped and unanswered ones included), so a
    filter that keeps one trace does not report 1.0 by construction."""
    if not samples:
        raise ValueError("deepconf needs at least one sample")
    opts = options.of(DeepConfOptions)
    confs = [trace_confidence(s.confidence, opts.window) for s in samples]
    stopped = [s.finish_reason == STOPPED for s in samples]
    if opts.mode == "online":
        threshold = bar(confs[: opts.warmup], opts.keep)
    else:
        threshold = bar(confs, opts.keep)
    kept = [c >= threshold and not st for c, st in zip(confs, stopped, strict=True)]
    answers = extract_all(samples, options.answer)
    answers = [None if st else a for a, st in zip(answers, stopped, strict=True)]
    groups = group_answers(answers)
    voted = [sum(confs[i] for i in g.members if kept[i]) for g in groups]
    weight = [sum(confs[i] for i in g.members) for g in groups]
    total = sum(confs)
    order = sorted(
        (g for g in range(len(groups)) if voted[g] > 0 or any(kept[i] for i in groups[g].members)),
        key=lambda g: -voted[g],
    )
    tally = [
        TallyEntry(
            groups[g].answer.text,
            sum(kept[i] for i in groups[g].members),
            voted[g],
            weight[g] / total if total > 0 else 0.0,
        )
        for g in order
    ]
    ranking = [best_member([i for i in groups[g].members if kept[i]], confs) for g in order]
    live = [i for i in range(len(samples)) if not stopped[i]] or list(range(len(samples)))
    if order:
        win = order[0]
        chosen, answer = ranking[0], groups[win].answer.text
        confidence = weight[win] / total if total > 0 else 0.0
    else:
        chosen = best_member([i for i in live if kept[i]] or live, confs)
        answer, confidence, ranking = None, 0.0, [chosen]
    return Decision(
        strategy=NAME,
        chosen=chosen,
        answer=answer,
        confidence=confidence,
        tally=tally,
        ranking=ranking,
        answers=answers,
        unanswered=sum(a is None for a in answers),
        scores={"trace_confidence": confs},
        pruned=[not k for k in kept],
        notes={
            "deepconf": {
                "mode": opts.mode,
                "threshold": threshold,
                "kept": sum(kept),
                "stopped": sum(stopped),
                "window": opts.window,
                "top_k": opts.top_k,
            }
        },
    )


@dataclass(frozen=True)
class DeepConf(Defaults):
    """The DeepConf strategy object: engine-side token confidence, then `select`."""

    name: str = NAME
    kind: Kind = "select"
    stats: frozenset[str] = frozenset({"confidence"})
    default_samples: int | None = None
    options_key: str | None = NAME
    options_model: type[StrategyOptions] | None = DeepConfOptions

    def check(self, options: SelectOptions, samples: int) -> None:
        super().check(options, samples)
        opts = options.of(DeepConfOptions)
        if opts.mode != "online" or samples == 1:  # 1: temperature 0, one greedy trace
            return
        if samples <= opts.warmup:
            raise InvalidRequest(
                f"deepconf online mode draws {opts.warmup} warm-up traces "
                f"(ponder.deepconf.warmup) before any it can stop; samples ({samples}) must "
                "exceed that",
                "ponder.deepconf.warmup",
            )
        if options.adaptive is not None:
            raise UnsupportedRequest(
                "deepconf online mode stops traces early itself and does not combine with "
                "ponder.adaptive (use mode 'offline' with adaptive stopping)",
                "ponder.adaptive",
            )

    def sampling(self, params: SamplingParams, options: SelectOptions) -> SamplingParams:
        return dataclasses.replace(params, confidence_top_k=options.of(DeepConfOptions).top_k)

    def calibration_key(self, options: SelectOptions) -> str:
        """Online mode is its own row and map (`deepconf+online`): its stopped traces give
        other confidences than offline's."""
        if options.of(DeepConfOptions).mode == "online":
            return f"{self.name}+online"
        return super().calibration_key(options)

    def variants(self, options: SelectOptions, samples: int) -> tuple[Variant, ...]:
        """Online mode, replayed on traces drawn offline (`simulate_online`), when the samples
        exceed the warm-up."""
        opts = options.of(DeepConfOptions)
        if opts.mode == "online" or samples <= opts.warmup:
            return ()
        online = dataclasses.replace(options, own=opts.model_copy(update={"mode": "online"}))
        replay = lambda s, o: simulate_online(s, o.of(DeepConfOptions))  # noqa: E731
        return (Variant("online", online, replay),)

    def decide(self, samples: Sequence[Sample], options: SelectOptions) -> Decision | None:
        return alone(select(samples, options), samples)

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided:
        opts = job.options.of(DeepConfOptions)
        job = dataclasses.replace(job, params=self.sampling(job.params, job.options))
        stopped = None
        if opts.mode == "online" and job.samples > opts.warmup:
            gen = await _online(job, engine, hooks)
        elif job.options.adaptive is not None:
            from . import adaptive

            gen, stopped = await adaptive.draw(job, engine, hooks)
        else:
            gen = await engine.sample(job.prompt_ids, job.params, job.samples, hooks.on_progress)
        t0 = time.perf_counter()
        decision = await asyncio.to_thread(self.decide, gen.samples, job.options)
        return Decided(gen, decision, time.perf_counter() - t0, stopped)


async def _online(job: Job, engine: Engine, hooks: Hooks) -> Generation:
    """Warm-up traces, their bar, then the other traces under the engine's stop rule (on one
    engine session: llama.cpp reuses the prompt's cache). Trace i is seeded seed + i either
    way, so the warm-up traces are the offline run's first ones."""
    opts = job.options.of(DeepConfOptions)
    params = job.params
    started = time.perf_counter()
    async with engine.session() as session:
        warm = await session.sample(job.prompt_ids, params, opts.warmup)
        if hooks.on_progress is not None:
            hooks.on_progress(opts.warmup, job.samples)
        confs = await asyncio.to_thread(
            lambda: [trace_confidence(s.confidence, opts.window) for s in warm.samples]
        )
        rest = dataclasses.replace(
            params,
            seed=None if params.seed is None else params.seed + opts.warmup,
            stop_confidence=(opts.window, bar(confs, opts.keep)),
        )
        late = await session.sample(job.prompt_ids, rest, job.samples - opts.warmup)
        if hooks.on_progress is not None:
            hooks.on_progress(job.samples, job.samples)
    samples = list(warm.samples) + [
        dataclasses.replace(s, index=opts.warmup + i) for i, s in enumerate(late.samples)
    ]
    return Generation(
        samples=samples,
        prompt_tokens=warm.prompt_tokens,
        queue_s=warm.queue_s,
        generate_s=max(time.perf_counter() - started - warm.queue_s, 0.0),
        unused_tokens=warm.unused_tokens + late.unused_tokens,
        exact=warm.exact and late.exact,
        prompt_logprobs=warm.prompt_logprobs,
    )


STRATEGY = DeepConf()
