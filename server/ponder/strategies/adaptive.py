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
from collections.abc import Awaitable, Callable, Sequence

from scipy.special import betainc

from ..answers import Answer, AnswerSpec, equivalent
from ..types import Engine, Generation, Sample, phase
from .base import AdaptiveOptions, extract_all, group_answers
from .job import Hooks, Job


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


def rule(spec: AnswerSpec, opts: AdaptiveOptions) -> Callable[[list[Sample]], Awaitable[bool]]:
    """The stopping rule over whole samples (CNTP + vote's decodes): grade them and check
    `settled`, in a worker thread (grading grows with the text)."""

    def check(samples: list[Sample]) -> bool:
        return settled(extract_all(samples, spec), opts)

    async def enough(samples: list[Sample]) -> bool:
        return await asyncio.to_thread(check, samples)

    return enough


async def draw(job: Job, engine: Engine, hooks: Hooks) -> tuple[Generation, str]:
    """Waves of samples until `settled` or the ceiling (`job.samples`): the samples drawn and
    why it stopped ("settled" or "ceiling"). Progress is reported after each wave.

    Within a wave the rule is checked as samples finish, on the longest run of finished
    samples in sampling order; when it fires, the engine stops the wave's running samples
    (llama.cpp, vLLM; an upstream finishes the wave, and the rule is checked after it). The
    samples kept are that run, so they are always the fixed-budget run's first ones; samples
    cut short, or finished out of order past the run, are paid for: their tokens count in
    usage (`unused_tokens`), their answers do not vote."""
    opts = job.options.adaptive
    assert opts is not None
    drawn: list[Sample] = []
    answers: list[Answer | None] = []
    gens: list[Generation] = []
    started = time.perf_counter()
    stopped = "ceiling"
    async with engine.session() as session:
        while len(drawn) < job.samples:
            k = min(opts.wave, job.samples - len(drawn))
            seed = None if job.params.seed is None else job.params.seed + len(drawn)
            wave = _Wave(answers, k, job)
            with phase("wave"):
                gen = await session.sample(
                    job.prompt_ids,
                    dataclasses.replace(job.params, seed=seed),
                    k,
                    on_sample=wave.add,
                )
            gens.append(gen)
            if wave.settled_at is None:  # the engine did not report samples as they finished
                for s in gen.samples:
                    await asyncio.to_thread(wave.add, s)
            used = wave.settled_at if wave.settled_at is not None else k
            kept = gen.samples[:used]
            gen.unused_tokens += sum(s.n_tokens for s in gen.samples[used:])
            drawn += [dataclasses.replace(s, index=len(drawn) + i) for i, s in enumerate(kept)]
            answers += wave.answers[:used]
            if hooks.on_progress is not None:
                hooks.on_progress(len(drawn), job.samples)
            if wave.settled_at is not None and wave.fired:
                stopped = "settled"
                break
    if hooks.on_stop is not None:
        hooks.on_stop(stopped, len(drawn))
    return _joined(gens, drawn, time.perf_counter() - started), stopped


class _Wave:
    """One wave's answers as its samples finish (called on the engine's thread, or a worker
    thread: grading grows with the text and never runs on the event loop)."""

    def __init__(self, before: list[Answer | None], size: int, job: Job) -> None:
        self.before = before
        self.answers: list[Answer | None] = [None] * size
        self.done = [False] * size
        self.size = size
        self.spec = job.options.answer
        opts = job.options.adaptive
        assert opts is not None
        self.opts = opts
        self.settled_at: int | None = None
        """Samples of the wave kept: the finished run when the rule fired, or the wave."""
        self.fired = False

    def add(self, sample: Sample) -> bool:
        """Record a finished sample; True (stop the wave) once the finished run settles."""
        if self.settled_at is not None:
            return True
        i = sample.index
        self.answers[i] = extract_all([sample], self.spec)[0]
        self.done[i] = True
        run = 0
        while run < self.size and self.done[run]:
            run += 1
        if run and settled(self.before + self.answers[:run], self.opts):
            self.settled_at, self.fired = run, True
            return True
        if run == self.size:
            self.settled_at = run
        return False


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
