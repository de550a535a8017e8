"""Drawing the candidates `ponder eval` evaluates: in process on the embedded engine, or from a
running server over HTTP (`CandidateSource`, `sample_all`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..strategies import REGISTRY, SelectOptions, StrategyOptions
from ..types import SamplingParams
from .datasets import Problem
from .records import Candidate, Decided, ProblemRecord
from .runner import SAMPLING, pool_of


@dataclass(frozen=True)
class Voter:
    """How the shared pool of plain samples is drawn: over HTTP as `strategy` with its options
    `block` (the samples are the same whichever strategy votes on them), with per-token
    confidence from the top `confidence_k` logprobs when a strategy evaluated reads it."""

    strategy: str = "majority_vote"
    block: dict[str, Any] = field(default_factory=dict)
    confidence_k: int = 0


def voter_for(strategies: Sequence[str], own: Mapping[str, StrategyOptions]) -> Voter:
    """The first selection strategy whose engine parameters (`Strategy.sampling`) ask for
    per-token confidence draws the pool, so its samples carry it; else plain voting."""
    for name in strategies:
        strategy = REGISTRY[name]
        if pool_of(name) != SAMPLING:
            continue
        options = SelectOptions(own=own.get(name))
        k = strategy.sampling(SamplingParams(), options).confidence_top_k
        if k:
            given = own.get(name)
            key = strategy.options_key
            drawn = given.drawn().model_dump(mode="json", exclude_defaults=True) if given else {}
            block = {key: drawn} if key and drawn else {}
            return Voter(name, block, k)
    return Voter()


class CandidateSource:
    """Draws the candidates of a problem: in process on an engine, or from a running server."""

    def __init__(self, url: str | None, temperature: float, seed: int, model: str | None) -> None:
        self.url = url
        self.temperature = temperature
        self.seed = seed
        self.model = model
        self._engine: Any = None
        self._client: Any = None

    async def start(self) -> None:
        if self.url:
            from ponder_client import AsyncPonder

            self._client = AsyncPonder(self.url, timeout=3600, model=self.model)
        else:
            from ..config import Settings
            from ..engines import create_engine

            settings = Settings(model=self.model) if self.model else Settings()
            self._engine = create_engine(settings)
            await self._engine.start()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._engine is not None:
            await self._engine.close()

    async def draw(
        self, p: Problem, k: int, n: int, pool: str, voter: Voter | None = None
    ) -> list[Candidate]:
        """n candidates of problem k for `pool` (see pool_of), through the runner in
        process or a server over HTTP; the shared pool as `voter` says (per-token confidence
        included when it asks for it; the samples are the same)."""
        seed = self.seed + 100_003 * k
        voter = voter or Voter()
        if self._client is not None:
            return await self._draw_http(p, n, pool, seed, voter)
        from .. import runner
        from ..strategies import Job

        eng = self._engine
        ids = (
            eng.render_chat([{"role": "user", "content": p.prompt}])
            if p.kind == "chat"
            else eng.tokenize(p.prompt)
        )
        params = SamplingParams(
            max_tokens=p.max_tokens,
            temperature=self.temperature,
            seed=seed,
            stop=p.stop,
            confidence_top_k=voter.confidence_k if pool == SAMPLING else 0,
        )
        strategy = "none" if pool == SAMPLING else pool
        out = await runner.run(Job(strategy, ids, params, n, choices=n), eng)
        gen = out.generation
        extra = gen.unused_tokens / max(len(gen.samples), 1)  # trials, spread evenly (as HTTP)
        return [
            Candidate(
                s.text, s.n_tokens + extra, s.mean_logprob, s.self_certainty, _rounded(s.confidence)
            )
            for s in gen.samples
        ]

    async def decide(self, p: Problem, k: int, n: int, strategy: str) -> Decided:
        """Run a live strategy (usc, aggregate, verify) with n samples on problem k: its
        decision and every token the request generated."""
        seed = self.seed + 100_003 * k
        if self._client is not None:
            r = await self._ask_http(p, strategy, n, seed)
            return Decided(r.answer, r.confidence, float(r.usage.completion_tokens))
        from .. import runner
        from ..answers import AnswerSpec
        from ..strategies import Job

        eng = self._engine
        ids = (
            eng.render_chat([{"role": "user", "content": p.prompt}])
            if p.kind == "chat"
            else eng.tokenize(p.prompt)
        )
        params = SamplingParams(
            max_tokens=p.max_tokens, temperature=self.temperature, seed=seed, stop=p.stop
        )
        options = SelectOptions(answer=AnswerSpec(p.format))  # type: ignore[arg-type]
        job = Job(strategy, ids, params, n, options=options, question=p.prompt)
        out = await runner.run(job, eng)
        d = out.decision
        tokens = float(out.generation.completion_tokens)
        return Decided(d.answer if d else None, d.confidence if d else None, tokens)

    async def _ask_http(self, p: Problem, strategy: str, n: int, seed: int, **extra: Any) -> Any:
        """One request for problem p to the server: n samples of `strategy`."""
        call = self._client.chat if p.kind == "chat" else self._client.complete
        return await call(
            p.prompt,
            strategy=strategy,
            samples=n,
            max_tokens=p.max_tokens,
            seed=seed,
            temperature=self.temperature,
            stop=list(p.stop) or None,
            answer={"format": p.format},
            **extra,
        )

    async def _draw_http(
        self, p: Problem, n: int, pool: str, seed: int, voter: Voter
    ) -> list[Candidate]:
        strategy = voter.strategy if pool == SAMPLING else pool
        extra = voter.block if pool == SAMPLING else {}
        r = await self._ask_http(p, strategy, n, seed, include_candidates=True, **extra)
        cands = r.candidates or []
        per_token_extra = (r.usage.completion_tokens - sum(c.tokens for c in cands)) / max(
            len(cands), 1
        )
        return [
            Candidate(
                c.text,
                c.tokens + per_token_extra,
                c.mean_logprob,
                c.self_certainty,
                c.token_confidence,
            )
            for c in cands
        ]


def _rounded(confidence: np.ndarray) -> list[float] | None:
    """Per-token confidences as stored (4 decimals keep problems.jsonl small)."""
    return [round(float(c), 4) for c in confidence] if confidence.size else None


async def sample_all(
    problems: Sequence[Problem],
    sampler: CandidateSource,
    n: int,
    pools: Sequence[str],
    progress: Any = None,
    voter: Voter | None = None,
    live: Sequence[str] = (),
    budgets: Sequence[int] = (),
) -> list[ProblemRecord]:
    """Draw every problem's candidates for each pool (`pool_of` the strategies evaluated),
    and run each `live` strategy once per budget; Ctrl-C stops and keeps the problems
    finished so far."""
    records: list[ProblemRecord] = []
    try:
        for k, p in enumerate(problems):
            rec = ProblemRecord(p.id, p.gold, p.format)
            for pool in pools:
                rec.candidates[pool] = await sampler.draw(p, k, n, pool, voter)
            for strategy in live:
                rec.live[strategy] = {b: await sampler.decide(p, k, b, strategy) for b in budgets}
            records.append(rec)
            if progress is not None:
                progress()
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    return records
