"""Generative self-aggregation (Li et al. 2025, "LLMs Can Generate a Better Answer by
Aggregating Their Own Responses"), docs/strategies.md section 8: N samples, then one call
writes a new answer with the N as context. The new answer is the response (the last
candidate, after the N); its confidence is the share of the N whose extracted answer equals
the aggregate's, or null when no answer can be extracted from it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence

from pydantic import Field, field_validator

from ..answers import equivalent
from ..types import Engine, Sample
from . import followup, prompts
from .base import (
    Decision,
    SelectOptions,
    StrategyOptions,
    extract_all,
    group_answers,
)
from .job import Decided, Hooks, Job

NAME = "aggregate"


class AggregateOptions(StrategyOptions):
    """`ponder.aggregate`: `prompt`: the aggregation prompt (docs/strategies.md, "Prompts"),
    with `{question}` and `{responses}`; `temperature`: the aggregate's (default 0, greedy)."""

    prompt: str | None = Field(None, max_length=prompts.MAX_PROMPT_CHARS)
    temperature: float = Field(0.0, ge=0.0, le=2.0)

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, v: str | None) -> str | None:
        return v if v is None else prompts.check_prompt(v, NAME)


def select(samples: Sequence[Sample], options: SelectOptions) -> Decision:
    """`samples`: the N candidates, then the aggregate. The tally is the candidates' votes
    (the aggregate's answer first when some candidate shares it); the aggregate is chosen."""
    *cands, _ = samples
    n = len(cands)
    answers = extract_all(samples, options.answer)
    mine = answers[n]
    groups = group_answers(answers[:n], equivalent)
    same = next((g for g in groups if mine is not None and equivalent(g.answer, mine)), None)
    tally, shown = followup.first_then_votes(groups, same, cands, n)
    return Decision(
        strategy=NAME,
        chosen=n,
        answer=mine.text if mine is not None else None,
        confidence=None if mine is None else (len(same.members) / n if same else 0.0),
        tally=tally,
        ranking=[n, *shown],
        answers=answers,
        unanswered=sum(a is None for a in answers[:n]),
    )


@dataclasses.dataclass(frozen=True)
class Aggregate(followup.AsksAgain):
    name: str = NAME
    options_model: type[StrategyOptions] | None = AggregateOptions

    def followup_tokens(self, options: SelectOptions, samples: int, max_tokens: int) -> int:
        return max_tokens  # the new answer, with the request's budget

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided:
        opts = job.options.of(AggregateOptions)
        calls = self.calls(job, hooks)
        gen = await followup.candidates(job, engine, calls)
        budget = job.params.max_tokens
        make = followup.numbered_prompt(opts.prompt or prompts.AGGREGATE, job.question)
        ids, cut = await followup.fitted(engine, make, [s.text for s in gen.samples], budget)
        params = dataclasses.replace(
            job.params, temperature=opts.temperature, confidence_top_k=0, stop_confidence=None
        )
        (new,) = (await followup.ask(engine, ids, params, calls)).samples
        new = dataclasses.replace(new, index=len(gen.samples))
        t0 = time.perf_counter()
        decision = await asyncio.to_thread(select, [*gen.samples, new], job.options)
        decision.notes = {"aggregate": {"index": new.index, "shown_chars": cut}}
        decision.usage = {"followup": calls.note()}
        return Decided(followup.with_calls(gen, [new], calls), decision, time.perf_counter() - t0)


STRATEGY = Aggregate()
