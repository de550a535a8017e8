"""What the strategies that ask the model about its own candidates (usc, aggregate, verify)
share: drawing the candidates with room in the progress count for the calls that follow,
rendering a follow-up prompt off the event loop, fitting N responses into the context, and
P(Yes) from a next-token distribution. The decisions themselves are pure functions in each
strategy's module."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import verifiers
from ..errors import RequestTooLarge, UnsupportedRequest
from ..types import Engine, Generation, Sample, SamplingParams, phase
from . import prompts
from .base import Decision, Group, SelectOptions, StrategyOptions, TallyEntry, best_member
from .job import Hooks, Job, Kind
from .strategy import Defaults


@dataclass
class Calls:
    """The follow-up calls of one request: how many, their tokens (in `usage`, and said in
    the decision's notes), and the progress they report after the candidates'."""

    hooks: Hooks
    candidates: int
    planned: int
    """Calls after the candidates (the strategy's progress_total less its samples)."""
    done: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: list[str] = field(default_factory=list)

    def progress(self, done: int, total: int) -> None:
        """The candidates' progress, out of the whole request's calls."""
        if self.hooks.on_progress is not None:
            self.hooks.on_progress(done, total + self.planned)

    def count(self, gen: Generation) -> None:
        self.counted(gen.prompt_tokens, gen.completion_tokens)

    def counted(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.done += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if self.hooks.on_progress is not None:
            total = self.candidates + self.planned
            self.hooks.on_progress(self.candidates + self.done, total)

    def note(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "calls": self.done,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
        if self.failed:
            out["failed"] = self.failed
        return out


async def candidates(job: Job, engine: Engine, calls: Calls) -> Generation:
    """The job's N samples (progress counted out of every call the request will make)."""
    return await engine.sample(job.prompt_ids, job.params, job.samples, calls.progress)


async def render(engine: Engine, messages: list[dict[str, Any]]) -> list[int]:
    """A follow-up prompt's token ids, rendered by the model's chat template in a worker
    thread (rendering grows with the candidates' text)."""
    return await asyncio.to_thread(engine.render_chat, messages)


async def ask(
    engine: Engine, prompt_ids: list[int], params: SamplingParams, calls: Calls, n: int = 1
) -> Generation:
    with phase("followup"):
        gen = await engine.sample(prompt_ids, params, n)
    calls.count(gen)
    return gen


def p_yes(gen: Generation) -> float | None:
    """P(Yes) of a one-token verdict call (`greedy(1, verifiers.TOP_K)`), None when neither
    Yes nor No is among its top tokens."""
    samples = gen.samples
    top = samples[0].top_logprobs if samples else None
    return verifiers.yes_probability(top[0]) if top else None


def _render_made(engine: Engine, make: Callable[[list[str]], str], shown: list[str]) -> list[int]:
    """Build the prompt and render it (in a worker thread: both grow with the responses)."""
    return engine.render_chat([{"role": "user", "content": make(shown)}])


async def fitted(
    engine: Engine, make: Callable[[list[str]], str], responses: list[str], max_tokens: int
) -> tuple[list[int], int | None]:
    """The prompt of `make(responses)` as token ids, with `max_tokens` to spare in the
    context: when the whole does not fit, every response is cut to the same number of
    characters, halved until it fits. Also returns that cut (None: shown whole)."""
    shown, cut = responses, None
    longest = max((len(r) for r in responses), default=0)
    while True:
        ids = await asyncio.to_thread(_render_made, engine, make, shown)
        try:
            engine.check_fits(len(ids), max_tokens, 1)
            return ids, cut
        except RequestTooLarge:
            if cut == 1 or longest == 0:
                raise
            cut = max(1, (cut or longest) // 2)
            shown = [r[:cut] for r in responses]


def greedy(max_tokens: int, top_logprobs: int = 0) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, top_logprobs=top_logprobs)


def with_calls(
    gen: Generation, extra: Sequence[Sample], calls: Calls, outside: Calls | None = None
) -> Generation:
    """The candidates' generation with `extra` samples after them (aggregate's new answer)
    and every follow-up token in usage: this model's (`calls`) and an external verifier's
    (`outside`) prompts in `followup_prompt_tokens`, their generated tokens in
    `unused_tokens` (generated, in no returned sample)."""
    shown = sum(s.n_tokens for s in extra)
    more = [c for c in (calls, outside) if c is not None]
    return Generation(
        samples=[*gen.samples, *extra],
        prompt_tokens=gen.prompt_tokens,
        queue_s=gen.queue_s,
        generate_s=gen.generate_s,
        unused_tokens=gen.unused_tokens + sum(c.completion_tokens for c in more) - shown,
        exact=gen.exact,
        prompt_logprobs=gen.prompt_logprobs,
        followup_prompt_tokens=sum(c.prompt_tokens for c in more),
    )


@dataclass(frozen=True)
class AsksAgain(Defaults):
    """What usc, aggregate and verify share as strategy objects: a selection kind that reads
    no per-token stat, chooses among free-form responses too, decides only with the model's
    (or a verifier's) help after sampling (so `ponder eval` runs it rather than replaying
    it), and reads all its candidates at once (no adaptive stopping). Each subclass names
    itself and its options model, and says how many calls and tokens follow the samples."""

    name: str = ""
    kind: Kind = "select"
    stats: frozenset[str] = frozenset()
    default_samples: int | None = None
    options_model: type[StrategyOptions] | None = None
    free_form: bool = True
    replayable: bool = False

    @property
    def options_key(self) -> str | None:
        return self.name

    def check(self, options: SelectOptions, samples: int) -> None:
        super().check(options, samples)
        if options.adaptive is not None:
            raise UnsupportedRequest(
                f"adaptive stopping does not combine with strategy '{self.name}' (it reads "
                "all its candidates at once)",
                "ponder.adaptive",
            )

    def decide(self, samples: Sequence[Sample], options: SelectOptions) -> Decision | None:
        return None  # it needs the model again: see run

    def progress_total(self, options: SelectOptions, samples: int) -> int:
        return samples + 1  # the candidates, then one call (usc, aggregate)

    def calls(self, job: Job, hooks: Hooks) -> Calls:
        """The request's follow-up call counter, planned as `progress_total` says."""
        planned = self.progress_total(job.options, job.samples) - job.samples
        return Calls(hooks, job.samples, planned)


def numbered_prompt(template: str, question: str) -> Callable[[list[str]], str]:
    """The prompt that shows the question and the numbered responses (usc, aggregate)."""

    def make(texts: list[str]) -> str:
        return prompts.fill(template, question=question, responses=prompts.numbered(texts))

    return make


def first_then_votes(
    groups: Sequence[Group], first: Group | None, samples: Sequence[Sample], n: int
) -> tuple[list[TallyEntry], list[int]]:
    """The tally with `first` (the chosen answer's group) first, then the others by votes
    (ties in sampling order), share = votes / n; and the sample shown for each of the others
    (its highest mean logprob)."""
    others = sorted((g for g in groups if g is not first), key=lambda g: -len(g.members))
    ordered = ([first] if first is not None else []) + others
    tally = [
        TallyEntry(g.answer.text, len(g.members), float(len(g.members)), len(g.members) / n)
        for g in ordered
    ]
    mean_lp = [s.mean_logprob for s in samples]
    return tally, [best_member(g.members, mean_lp) for g in others]
