"""Generative verification (GenRM: Zhang et al. 2024; "When To Solve, When To Verify", Singhi
et al. 2025), docs/strategies.md section 9: N samples, then the model judges each one. Its score
is P(Yes) of the verdict's first token, exact from the model's next-token distribution and
normalised over the Yes/No variants (followup.yes_probability); with `verifications` = k > 0
(GenRM-CoT) the model first writes k sampled verification rationales per candidate and the
score is the mean P(Yes) after them. Selection: the best-scored candidate, or a vote weighted
by the scores."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Literal

import httpx
from pydantic import Field, field_validator

from .. import verifiers
from ..answers import equivalent
from ..errors import InvalidRequest, UnsupportedRequest
from ..types import Engine, Sample, SamplingParams
from . import followup, prompts
from .base import (
    Decision,
    SelectOptions,
    StrategyOptions,
    TallyEntry,
    extract_all,
    group_answers,
)
from .job import Decided, Hooks, Job

NAME = "verify"


class VerifyOptions(StrategyOptions):
    """`ponder.verify`: `select`: "best" (the highest P(Yes)) or "weighted_vote" (answers
    voted with P(Yes) as weights); `verifications`: sampled rationales per candidate (0: the
    verdict directly); `rationale_tokens`: each rationale's budget; `prompt`: the
    verification prompt (docs/strategies.md, "Prompts"), with `{question}` and `{response}`;
    `verifier`: a verifier the server names in PONDER_VERIFIERS (an external judge or reward
    model) instead of the model itself."""

    select: Literal["best", "weighted_vote"] = "best"
    verifications: int = Field(0, ge=0, le=16)
    rationale_tokens: int = Field(256, ge=16, le=2048)
    prompt: str | None = Field(None, max_length=prompts.MAX_PROMPT_CHARS)
    verifier: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, v: str | None) -> str | None:
        return v if v is None else prompts.check_prompt(v, NAME)


def _key(score: float | None) -> float:
    return -1.0 if score is None else score


def select(
    samples: Sequence[Sample], options: SelectOptions, scores: Sequence[float | None]
) -> Decision:
    """The decision given each candidate's score (None: the verifier gave no Yes/No).
    best: the highest score wins (ties: the earliest), confidence = its score. weighted_vote:
    each answer's weight is the sum of its members' scores, the heaviest wins, confidence =
    its share of every candidate's score; its best-scored member is shown."""
    how = options.of(VerifyOptions).select
    n = len(samples)
    answers = extract_all(samples, options.answer)
    groups = group_answers(answers, equivalent)
    best_of = {id(g): max(g.members, key=lambda i: (_key(scores[i]), -i)) for g in groups}
    if how == "weighted_vote":
        weight = {id(g): sum(scores[i] or 0.0 for i in g.members) for g in groups}
    else:
        weight = {id(g): _key(scores[best_of[id(g)]]) for g in groups}
    ordered = sorted(groups, key=lambda g: -weight[id(g)])  # stable: ties keep sampling order
    total = sum(s or 0.0 for s in scores)
    tally = [
        TallyEntry(
            g.answer.text,
            len(g.members),
            float(weight[id(g)]),
            (weight[id(g)] / total if total > 0 else 0.0)
            if how == "weighted_vote"
            else len(g.members) / n,
        )
        for g in ordered
    ]
    top = max(range(n), key=lambda i: (_key(scores[i]), -i))
    if how == "weighted_vote" and ordered:
        chosen = best_of[id(ordered[0])]
        confidence: float | None = tally[0].share
    else:
        chosen = top if how == "best" or not ordered else best_of[id(ordered[0])]
        confidence = scores[chosen]
    ranking = [chosen] + [best_of[id(g)] for g in ordered if chosen not in g.members]
    return Decision(
        strategy=NAME,
        chosen=chosen,
        answer=answers[chosen].text if answers[chosen] is not None else None,  # type: ignore[union-attr]
        confidence=confidence,
        tally=tally,
        ranking=ranking,
        answers=answers,
        unanswered=sum(a is None for a in answers),
        scores={"verification": list(scores)},
        notes={"verify": {"select": how, "unscored": sum(s is None for s in scores)}},
    )


@dataclasses.dataclass(frozen=True)
class Verify(followup.AsksAgain):
    name: str = NAME
    options_model: type[StrategyOptions] | None = VerifyOptions

    def check(self, options: SelectOptions, samples: int) -> None:
        super().check(options, samples)
        own = options.of(VerifyOptions)
        if own.select == "weighted_vote" and options.answer.format == "none":
            raise UnsupportedRequest(
                "verify.select 'weighted_vote' votes on extracted answers; with answer.format "
                "'none' use select 'best'",
                "ponder.verify.select",
            )
        if own.verifier is not None:
            spec = verifiers.get(own.verifier)
            if spec is None:
                known = ", ".join(verifiers.names()) or "none are configured"
                raise InvalidRequest(
                    f"verify.verifier names no verifier this server configures ({known}; "
                    "PONDER_VERIFIERS)",
                    "ponder.verify.verifier",
                )
            if own.verifications:
                raise UnsupportedRequest(
                    "verify.verifications (rationales) are written by the model itself; an "
                    "external verifier gives one score per candidate",
                    "ponder.verify.verifications",
                )
            if spec.kind == "reward" and own.prompt is not None:
                raise UnsupportedRequest(
                    "a reward model reads the question and the answer, not a prompt",
                    "ponder.verify.prompt",
                )

    def followup_tokens(self, options: SelectOptions, samples: int, max_tokens: int) -> int:
        own = options.of(VerifyOptions)
        if own.verifier is not None:
            return samples  # one verdict token each, by the external judge
        k = own.verifications
        return samples * (k * (own.rationale_tokens + 1) if k else 1)

    def progress_total(self, options: SelectOptions, samples: int) -> int:
        k = options.of(VerifyOptions).verifications
        return samples + samples * (1 + k if k else 1)  # a verdict, or rationales + k verdicts

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided:
        opts = job.options.of(VerifyOptions)
        calls = self.calls(job, hooks)
        gen = await followup.candidates(job, engine, calls)
        outside = None
        if opts.verifier is not None:
            outside = self.calls(job, hooks)
            scores = await self._outside(job, opts, outside, gen.samples)
        else:
            scores = await asyncio.gather(
                *(self._score(job, engine, opts, calls, i, s) for i, s in enumerate(gen.samples))
            )
        t0 = time.perf_counter()
        decision = await asyncio.to_thread(select, gen.samples, job.options, scores)
        decision.usage = (
            {"verifier": {"name": opts.verifier, **outside.note()}}
            if outside is not None
            else {"followup": calls.note()}
        )
        return Decided(
            followup.with_calls(gen, [], calls, outside), decision, time.perf_counter() - t0
        )

    async def _outside(
        self, job: Job, opts: VerifyOptions, outside: followup.Calls, samples: Sequence[Sample]
    ) -> list[float | None]:
        """Each candidate's score from the configured verifier, concurrently; a candidate
        whose calls failed has none (said in usage.verifier.failed)."""
        spec = verifiers.get(str(opts.verifier))
        if spec is None:  # the configuration changed since the check
            raise InvalidRequest("verify.verifier is no longer configured", "ponder.verify")
        template = opts.prompt or prompts.VERIFY

        async def one(client: httpx.AsyncClient, i: int, s: Sample) -> float | None:
            prompt = prompts.fill(template, question=job.question, response=s.text)
            got = await verifiers.score(spec, client, prompt, job.question, s.text)
            outside.counted(got.prompt_tokens, got.completion_tokens)
            if got.error is not None:
                outside.failed.append(f"candidate {i}: {got.error} after {got.attempts}")
            return got.score

        async with httpx.AsyncClient() as client:
            return list(await asyncio.gather(*(one(client, i, s) for i, s in enumerate(samples))))

    async def _score(
        self,
        job: Job,
        engine: Engine,
        opts: VerifyOptions,
        calls: followup.Calls,
        i: int,
        sample: Sample,
    ) -> float | None:
        verdict = followup.greedy(1, verifiers.TOP_K)
        if opts.verifications == 0:
            template = opts.prompt or prompts.VERIFY

            def direct(texts: list[str]) -> str:
                return prompts.fill(template, question=job.question, response=texts[0])

            ids, _ = await followup.fitted(engine, direct, [sample.text], 1)
            return followup.p_yes(await followup.ask(engine, ids, verdict, calls))
        template = opts.prompt or prompts.VERIFY_RATIONALE

        def asked(texts: list[str]) -> str:
            return prompts.fill(template, question=job.question, response=texts[0])

        ids, cut = await followup.fitted(engine, asked, [sample.text], opts.rationale_tokens)
        seed = None if job.params.seed is None else job.params.seed + 7919 * (i + 1)
        params = SamplingParams(
            max_tokens=opts.rationale_tokens, temperature=job.params.temperature, seed=seed
        )
        rationales = await followup.ask(engine, ids, params, calls, n=opts.verifications)
        question = asked([sample.text if cut is None else sample.text[:cut]])

        async def after(rationale: Sample) -> float | None:
            said = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": rationale.text},
                {"role": "user", "content": prompts.VERIFY_VERDICT},
            ]
            ids = await followup.render(engine, said)
            return followup.p_yes(await followup.ask(engine, ids, verdict, calls))

        got = [p for p in await asyncio.gather(*map(after, rationales.samples)) if p is not None]
        return sum(got) / len(got) if got else None


STRATEGY = Verify()
