"""What a strategy is: a small protocol, the request it runs (`Job`) and the two common
shapes, best-of-N selection and plain generation. docs/architecture.md, "Adding a strategy".
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..types import Engine, Generation, Sample, SamplingParams
from .base import Decision, SelectOptions

Kind = Literal["plain", "select", "decode"]
"""plain: the samples are the answer (`none`); select: draw N samples in one batch, then a
pure function picks; decode: the strategy drives the engine itself (CNTP)."""


@dataclass(frozen=True)
class Job:
    """A validated request, free of HTTP: what to generate and how to choose."""

    strategy: str
    prompt_ids: list[int]
    params: SamplingParams
    samples: int
    """How many samples to draw (the request's `ponder.samples`, or `n` with `none`)."""
    choices: int = 1
    """How many to return (OpenAI's `n`): the winner, then the next-ranked distinct answers."""
    options: SelectOptions = field(default_factory=SelectOptions)
    logprobs: int | None = None
    """Per-token logprobs of the returned texts (top-k), None when not asked."""
    details: bool = False
    """Keep per-step details in the decision's notes (CNTP's steps, with include_candidates)."""


@dataclass
class Hooks:
    """Where a running job reports: finished samples, and text as a decode appends it."""

    on_progress: Callable[[int, int], None] | None = None
    on_text: Callable[[str], None] | None = None
    on_stop: Callable[[str, int], None] | None = None
    """Adaptive stopping ended the sampling: why ("settled" / "ceiling") and after how many."""


@dataclass
class Decided:
    """What a strategy's run produced: the samples, the decision (None for plain), and how
    long the decision took."""

    generation: Generation
    decision: Decision | None
    select_s: float = 0.0
    stopped: str | None = None
    """With adaptive stopping: "settled" (the rule fired) or "ceiling" (every sample drawn)."""


class Strategy(Protocol):
    """Every strategy: its name, kind, the engine stats it needs, its default sample count,
    `decide` (a pure function over samples) and `run` (generate, then decide)."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> Kind: ...

    @property
    def stats(self) -> frozenset[str]:
        """The per-token stats (`Sample` fields) its scores read. Engines without exact stats
        approximate those in `APPROXIMATED`; the sampled token's `logprob` is always exact."""

    @property
    def default_samples(self) -> int | None:
        """None: the server's PONDER_DEFAULT_SAMPLES."""

    @property
    def options_key(self) -> str | None:
        """The `ponder.<key>` options block this strategy reads (None: it has none); the
        block given with another strategy is a 400, not ignored."""

    def check(self, options: SelectOptions, samples: int) -> None:
        """Refuse settings it cannot run with, before anything is generated: raise
        `errors.InvalidRequest` or `errors.UnsupportedRequest` naming the field."""

    def decide(self, samples: Sequence[Sample], options: SelectOptions) -> Decision | None: ...

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided: ...


def alone(decision: Decision, samples: Sequence[Sample]) -> Decision:
    """With one sample there is no vote: its confidence is its own probability signal,
    exp(mean raw token logprob) (0 without an answer), not a share that is 1.0 by
    construction (CNTP's single decode reports the same)."""
    if len(samples) != 1:
        return decision
    s = samples[0]
    known = decision.answer is not None and len(s.logprob) > 0  # replayed samples: a mean
    confidence = math.exp(s.mean_logprob) if known else 0.0
    return dataclasses.replace(decision, confidence=confidence)


@dataclass(frozen=True)
class Selection:
    """Best-of-N: N samples in one engine call, then `select` off the event loop."""

    name: str
    select: Callable[[Sequence[Sample], SelectOptions], Decision]
    stats: frozenset[str] = frozenset()
    kind: Kind = "select"
    default_samples: int | None = None
    options_key: str | None = None

    def check(self, options: SelectOptions, samples: int) -> None:
        return None

    def decide(self, samples: Sequence[Sample], options: SelectOptions) -> Decision | None:
        return alone(self.select(samples, options), samples)

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided:
        stopped = None
        if job.options.adaptive is None:
            gen = await engine.sample(job.prompt_ids, job.params, job.samples, hooks.on_progress)
        else:
            from . import adaptive

            gen, stopped = await adaptive.draw(job, engine, hooks)
        t0 = time.perf_counter()
        decision = await asyncio.to_thread(self.decide, gen.samples, job.options)
        return Decided(gen, decision, time.perf_counter() - t0, stopped)


@dataclass(frozen=True)
class Plain:
    """`none`: the samples are the choices, nothing is selected."""

    name: str = "none"
    kind: Kind = "plain"
    stats: frozenset[str] = frozenset()
    default_samples: int | None = 1
    options_key: str | None = None

    def check(self, options: SelectOptions, samples: int) -> None:
        return None

    def decide(self, samples: Sequence[Sample], options: SelectOptions) -> Decision | None:
        return None

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided:
        gen = await engine.sample(job.prompt_ids, job.params, job.samples, hooks.on_progress)
        return Decided(gen, None)
