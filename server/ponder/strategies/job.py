"""The data a strategy runs on and reports: the request (`Job`), where it reports while it
runs (`Hooks`), and what it produced (`Decided`). A leaf of the strategies package: every
strategy module, and adaptive stopping, import it without importing one another."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..types import Generation, Sample, SamplingParams
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
    buffered: bool = False
    """Stream only the finished texts (a reply that may be a tool call is read whole)."""
    details: bool = False
    """Keep per-step details in the decision's notes (CNTP's steps, with include_candidates)."""
    question: str = ""
    """The request as text, for strategies that show the model its own candidates (usc,
    aggregate, verify): a chat's one user message, or its conversation as a transcript; a
    completion's prompt."""


@dataclass(frozen=True)
class Variant:
    """Another way to run a strategy on the same samples, for `ponder eval`'s rows
    (`<strategy>+<name>`): its options, and how stored samples become what the engine would
    have returned under it (e.g. DeepConf online: traces cut where the engine stops them)."""

    name: str
    options: SelectOptions
    replay: Callable[[Sequence[Sample], SelectOptions], list[Sample]]


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
