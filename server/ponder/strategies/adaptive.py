"""Adaptive stopping for voting strategies (docs/strategies.md section 2): draw the samples in
waves and stop as soon as the answer is settled, so an easy question costs a few samples and
a hard one the whole budget (`samples` is the ceiling).

The rules are pure functions of the answers drawn so far, in sampling order; `draw` runs the
waves on an engine session (on llama.cpp each wave reuses the prompt's cache) with sample i
seeded seed + i, so an adaptive run's samples are the first samples of the fixed-budget run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence

from scipy.special import betainc

from ..answers import Answer, equivalent
from ..types import Engine, Generation, Sample
from .base import AdaptiveOptions, extract_all, group_answers
from .strategy import Hooks, Job


def beta_settled_probability(a: int, b: int) -> float:
    """P(the leader's share > the runner-up's) under a uniform prior, with a and b votes:
    1 - I_0.5(a + 1, b + 1) (Adaptive-Consistency, Aggarwal et al. 2023)."""
    return float(1.0 - betainc(a + 1, b + 1, 0.5))


def settled(answers: Sequence[Answer | None], opts: AdaptiveOptions) -> bool:
    """Whether the answers drawn so far (sampling order) settle the vote."""
    if opts.method == "window":
        last = answers[-opts.window :]
        if len(last) < opts.window or any(a is None for a in last):
            return False
        first = last[0]
        assert first is not None
        return all(a is not None and equivalent(first, a) for a in last[1:])
    sizes = sorted((len(g.members) for g in group_answers(answers)), reverse=True)
    if not sizes:
        return False
    runner_up = sizes[1] if len(sizes) > 1 else 0
    return beta_settled_probability(sizes[0], runner_up) >= opts.threshold


async def draw(job: Job, engine: Engine, hooks: Hooks) -> tuple[Generation, str]:
    """Waves of samples until `settled` or the ceiling (`job.samples`): the samples drawn and
    why it stopped ("settled" or "ceiling"). Progress is reported after each wave."""
    opts = job.options.adaptive
    assert opts is not None
    spec = job.options.answer
    drawn: list[Sample] = []
    answers: list[Answer | None] = []
    gens: list[Generation] = []
    started = time.perf_counter()
    stopped = "ceiling"
    async with engine.session() as session:
        while len(drawn) < job.samples:
            k = min(opts.wave, job.samples - len(drawn))
            seed = None if job.params.seed is None else job.params.seed + len(drawn)
            gen = await session.sample(
                job.prompt_ids, dataclasses.replace(job.params, seed=seed), k
            )
            wave = [dataclasses.replace(s, index=len(drawn) + i) for i, s in enumerate(gen.samples)]
            gens.append(gen)
            drawn += wave
            # grading (regexes, the symbolic worker) grows with the text: never on the loop
            answers += await asyncio.to_thread(extract_all, wave, spec)
            if hooks.on_progress is not None:
                hooks.on_progress(len(drawn), job.samples)
            if await asyncio.to_thread(settled, answers, opts):
                stopped = "settled"
                break
    if hooks.on_stop is not None:
        hooks.on_stop(stopped, len(drawn))
    return _joined(gens, drawn, time.perf_counter() - started), stopped


def _joined(gens: list[Generation], drawn: list[Sample], elapsed: float) -> Generation:
    queue_s = gens[0].queue_s if gens else 0.0
    return Generation(
        samples=drawn,
        prompt_tokens=gens[0].prompt_tokens if gens else 0,
        queue_s=queue_s,
        generate_s=max(elapsed - queue_s, 0.0),
        unused_tokens=sum(g.unused_tokens for g in gens),
        exact=all(g.exact for g in gens),
        prompt_logprobs=gens[0].prompt_logprobs if gens else None,
    )
