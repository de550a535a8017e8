"""What a strategy is: a small protocol, the request it runs (`Job`) and the two common
shapes, best-of-N selection and plain generation. docs/architecture.md, "Adding a strategy".
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import UnsupportedRequest
from ..types import Engine, Sample, SamplingParams
from . import adaptive
from .base import Decision, SelectOptions, StrategyOptions
from .job import Decided, Hooks, Job, Kind, Variant

__all__ = [
    "Decided",
    "Defaults",
    "Hooks",
    "Job",
    "Kind",
    "Plain",
    "Selection",
    "Strategy",
    "Variant",
    "alone",
]


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

    @property
    def options_model(self) -> type[StrategyOptions] | None:
        """The pydantic model of that block (bounds and checks included): the request schema
        collects it from the registry; `SelectOptions.of(model)` reads it back."""

    def check(self, options: SelectOptions, samples: int) -> None:
        """Refuse settings it cannot run with, before anything is generated: raise
        `errors.InvalidRequest` or `errors.UnsupportedRequest` naming the field."""

    def sampling(self, params: SamplingParams, options: SelectOptions) -> SamplingParams:
        """What it asks of the engine beyond the request's parameters (DeepConf: per-token
        confidence); `ponder eval` draws its candidates with these."""

    def variants(self, options: SelectOptions, samples: int) -> tuple[Variant, ...]:
        """Other ways to run it that `ponder eval` replays on the same stored samples."""

    def progress_total(self, options: SelectOptions, samples: int) -> int:
        """What streamed progress counts to: its samples, plus the engine calls it makes
        after them (usc, aggregate, verify)."""

    def followup_tokens(self, options: SelectOptions, samples: int, max_tokens: int) -> int:
        """The most tokens its calls after the samples may generate (checked with the
        samples' budget before any work)."""

    @property
    def replayable(self) -> bool:
        """Whether `decide` alone decides from stored samples (`ponder eval` replays it)."""

    def calibration_key(self, options: SelectOptions) -> str:
        """The name of the variant these options run, as `ponder eval` names its rows and
        calibration maps: the strategy, `+beta` / `+window` with adaptive stopping,
        `+online` for DeepConf's online mode."""

    def decide(self, samples: Sequence[Sample], options: SelectOptions) -> Decision | None: ...

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided: ...


class Defaults:
    """The protocol's optional parts, for a strategy that has nothing to say in them."""

    name: str

    field_vote: bool = False
    """Whether it votes per field of a JSON answer (`answer.vote: "field"`)."""
    free_form: bool = False
    """Whether it chooses among answers it cannot extract (`answer.format: "none"`)."""
    replayable: bool = True
    """Whether `decide` alone makes its decision from stored samples (`ponder eval` replays
    it); False: it asks the model again after sampling (usc, aggregate, verify)."""

    def check(self, options: SelectOptions, samples: int) -> None:
        if options.answer.vote == "field" and not self.field_vote:
            raise UnsupportedRequest(
                "answer.vote 'field' is a majority vote per field; use strategy majority_vote",
                "ponder.answer.vote",
            )
        if options.answer.format == "none" and not self.free_form:
            raise UnsupportedRequest(
                "answer.format 'none' (free-form) leaves nothing to compare; use strategy "
                "usc, aggregate or verify, which ask the model about whole responses",
                "ponder.answer.format",
            )

    def sampling(self, params: SamplingParams, options: SelectOptions) -> SamplingParams:
        return params

    def variants(self, options: SelectOptions, samples: int) -> tuple[Variant, ...]:
        return ()

    def progress_total(self, options: SelectOptions, samples: int) -> int:
        return samples

    def followup_tokens(self, options: SelectOptions, samples: int, max_tokens: int) -> int:
        return 0

    def calibration_key(self, options: SelectOptions) -> str:
        adaptive = options.adaptive
        return self.name if adaptive is None else f"{self.name}+{adaptive.method}"


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
class Selection(Defaults):
    """Best-of-N: N samples in one engine call, then `select` off the event loop."""

    name: str
    select: Callable[[Sequence[Sample], SelectOptions], Decision]
    stats: frozenset[str] = frozenset()
    kind: Kind = "select"
    default_samples: int | None = None
    options_model: type[StrategyOptions] | None = None
    field_vote: bool = False

    @property
    def options_key(self) -> str | None:
        return self.name if self.options_model is not None else None

    def decide(self, samples: Sequence[Sample], options: SelectOptions) -> Decision | None:
        return alone(self.select(samples, options), samples)

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided:
        stopped = None
        if job.options.adaptive is None:
            gen = await engine.sample(job.prompt_ids, job.params, job.samples, hooks.on_progress)
        else:
            gen, stopped = await adaptive.draw(job, engine, hooks)
        t0 = time.perf_counter()
        decision = await asyncio.to_thread(self.decide, gen.samples, job.options)
        return Decided(gen, decision, time.perf_counter() - t0, stopped)


@dataclass(frozen=True)
class Plain(Defaults):
    """`none`: the samples are the choices, nothing is selected."""

    name: str = "none"
    kind: Kind = "plain"
    free_form: bool = True
    stats: frozenset[str] = frozenset()
    default_samples: int | None = 1
    options_key: str | None = None
    options_model: type[StrategyOptions] | None = None

    def decide(self, samples: Sequence[Sample], options: SelectOptions) -> Decision | None:
        return None

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided:
        gen = await engine.sample(job.prompt_ids, job.params, job.samples, hooks.on_progress)
        return Decided(gen, None)
