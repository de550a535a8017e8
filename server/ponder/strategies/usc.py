"""Universal self-consistency (Chen et al. 2023), docs/strategies.md section 7: N samples, then
one greedy call shows the model all of them (numbered, cut to fit the context) and asks which
is the most consistent with the others; the reply's last "Response k" picks the answer. Works
with any answer format, free-form (`none`) included."""

from __future__ import annotations

import asyncio
import dataclasses
import re
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

NAME = "usc"

_PICK = re.compile(r"[Rr]esponse\s*#?\s*(\d{1,4})")


class UscOptions(StrategyOptions):
    """`ponder.usc`: `prompt`: the selection prompt (docs/strategies.md, "Prompts"), with
    `{question}` and `{responses}`; `max_tokens`: the selection reply's budget."""

    prompt: str | None = Field(None, max_length=prompts.MAX_PROMPT_CHARS)
    max_tokens: int = Field(32, ge=8, le=512)

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, v: str | None) -> str | None:
        return v if v is None else prompts.check_prompt(v, NAME)


def picked(reply: str, n: int) -> int | None:
    """The response the reply names last ("Response k", k < n), None when it names none."""
    found = [int(m) for m in _PICK.findall(reply[:4000]) if int(m) < n]
    return found[-1] if found else None


def select(samples: Sequence[Sample], options: SelectOptions, pick: int | None) -> Decision:
    """The decision once the model picked `pick` (None: it named no response; the first
    sample is taken and the notes say so). Confidence: the share of samples whose answer is
    the picked one's, when the format extracts answers (none with format `none`)."""
    n = len(samples)
    answers = extract_all(samples, options.answer)
    chosen = 0 if pick is None else pick
    groups = group_answers(answers, equivalent)
    mine = next((g for g in groups if chosen in g.members), None)
    tally, shown = followup.first_then_votes(groups, mine, samples, n)
    ranking = [chosen, *shown]
    free = options.answer.format == "none"
    return Decision(
        strategy=NAME,
        chosen=chosen,
        answer=answers[chosen].text if answers[chosen] is not None else None,  # type: ignore[union-attr]
        confidence=None if free else (len(mine.members) / n if mine is not None else 0.0),
        tally=tally,
        ranking=ranking,
        answers=answers,
        unanswered=sum(a is None for a in answers),
        notes={"usc": {"picked": pick, "fallback": pick is None}},
    )


@dataclasses.dataclass(frozen=True)
class Usc(followup.AsksAgain):
    name: str = NAME
    options_model: type[StrategyOptions] | None = UscOptions

    def followup_tokens(self, options: SelectOptions, samples: int, max_tokens: int) -> int:
        return options.of(UscOptions).max_tokens

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided:
        opts = job.options.of(UscOptions)
        calls = self.calls(job, hooks)
        gen = await followup.candidates(job, engine, calls)
        make = followup.numbered_prompt(opts.prompt or prompts.USC, job.question)
        ids, cut = await followup.fitted(
            engine, make, [s.text for s in gen.samples], opts.max_tokens
        )
        reply = (await followup.ask(engine, ids, followup.greedy(opts.max_tokens), calls)).samples
        t0 = time.perf_counter()
        text = reply[0].text if reply else ""
        pick = picked(text, len(gen.samples))
        decision = await asyncio.to_thread(select, gen.samples, job.options, pick)
        notes = {**decision.notes["usc"], "reply": text[:500], "shown_chars": cut}  # type: ignore[dict-item]
        decision.notes = {"usc": notes}
        decision.usage = {"followup": calls.note()}
        return Decided(followup.with_calls(gen, [], calls), decision, time.perf_counter() - t0)


STRATEGY = Usc()
