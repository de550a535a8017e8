"""The runner: a validated `Job` and an engine in, an `Outcome` (or a stream of events) out.

Free of HTTP. The API, `ponder ask` and `ponder eval` all run requests through it; what a
strategy does is the strategy object's business (`ponder.strategies`), never the runner's.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from . import metrics, tracing
from .calibration import Calibration
from .strategies import REGISTRY, Decision, Hooks, Job, Strategy
from .types import APPROXIMATED, Engine, Generation

T = TypeVar("T")

StreamMode = Literal["tokens", "segments", "buffered"]


@dataclass
class Outcome:
    """A finished job: what was generated, what was decided, which samples are the choices."""

    job: Job
    generation: Generation
    decision: Decision | None
    choices: list[int]
    """Sample indices of the returned choices, best first."""
    select_s: float
    exact: bool
    """False when a score the strategy used had to be approximated."""
    stopped: str | None = None
    """Adaptive stopping: "settled" or "ceiling" (None for a fixed budget)."""


def strategy_of(job: Job) -> Strategy:
    return REGISTRY[job.strategy]


async def run(
    job: Job,
    engine: Engine,
    hooks: Hooks | None = None,
    calibration: Calibration | None = None,
) -> Outcome:
    """Run the job's strategy on the engine (its confidence calibrated when a calibration is
    given) and record the request's metrics."""
    strategy = strategy_of(job)
    with tracing.span(
        "ponder.run", strategy=job.strategy, samples=job.samples, engine=engine.model_name
    ) as span:
        decided = await strategy.run(job, tracing.traced(engine), hooks or Hooks())
        gen = decided.generation
        tracing.timed("ponder.select", decided.select_s)
        key = strategy.calibration_key(job.options)
        decision = calibrated(
            decided.decision, job.samples, calibration, key, job.params.temperature
        )
        if decision is None:
            out = Outcome(job, gen, None, list(range(len(gen.samples))), 0.0, gen.exact)
        else:
            exact = decision.exact and (gen.exact or not strategy.stats & APPROXIMATED)
            choices = decision.ranking[: job.choices]
            out = Outcome(job, gen, decision, choices, decided.select_s, exact, decided.stopped)
        _trace_outcome(span, out)
    observe(out)
    return out


def _trace_outcome(span: Any, out: Outcome) -> None:
    """The outcome as the run span's attributes (text only with PONDER_TRACE_CONTENT)."""
    gen, d = out.generation, out.decision
    tracing.set_attributes(
        span,
        samples_drawn=len(gen.samples),
        stopped=out.stopped,
        confidence=d.confidence if d is not None else None,
        prompt_tokens=gen.prompt_tokens + gen.followup_prompt_tokens,
        completion_tokens=gen.completion_tokens,
        exact=out.exact,
    )
    if tracing.content() and d is not None:
        chosen = gen.samples[out.choices[0]].text if out.choices else ""
        tracing.set_attributes(span, answer=d.answer, text=tracing.clip(chosen))


async def run_all(
    jobs: list[Job], engine: Engine, calibration: Calibration | None = None
) -> list[Outcome]:
    """Several jobs at once (a batch of prompts), in order; if one fails, the others are
    cancelled and the error is raised."""
    tasks = [asyncio.ensure_future(run(job, engine, calibration=calibration)) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def calibrated(
    decision: Decision | None,
    samples: int,
    calibration: Calibration | None,
    key: str | None = None,
    temperature: float | None = None,
) -> Decision | None:
    """The decision with its confidence mapped by the map fitted for exactly this variant
    (`key`, default the strategy's name), budget and temperature (the raw value kept as
    confidence_raw); notes say which map, or why the confidence stays raw
    (`Calibration.lookup`)."""
    if decision is None or calibration is None:
        return decision
    if decision.confidence is None:
        notes = {**decision.notes, "calibration": "no confidence to calibrate"}
        return dataclasses.replace(decision, notes=notes)
    found, said = calibration.lookup(key or decision.strategy, samples, temperature)
    notes = {**decision.notes, "calibration": said}
    if found is None:
        return dataclasses.replace(decision, notes=notes)
    return dataclasses.replace(
        decision,
        confidence=found(decision.confidence),
        confidence_raw=decision.confidence,
        notes=notes,
    )


def observe(out: Outcome) -> None:
    gen, d = out.generation, out.decision
    metrics.observe_outcome(
        out.job.strategy,
        queue_s=gen.queue_s,
        generate_s=gen.generate_s,
        select_s=out.select_s,
        samples=len(gen.samples),
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        confidence=d.confidence if d else None,
        winner_votes=(d.tally[0].votes if d.tally else 0) if d else None,
    )


# ---------------------------------------------------------------- streaming


@dataclass
class Progress:
    """`done` of `total` samples are finished; `stopped` says why sampling ended early (or
    not), with adaptive stopping."""

    done: int
    total: int
    stopped: str | None = None


@dataclass
class Text:
    """Text appended to choice 0 as it is produced (token or segment streaming)."""

    text: str


@dataclass
class Idle:
    """Nothing happened for `idle_s` seconds (a stream sends a keep-alive)."""


@dataclass
class Finished:
    outcome: Outcome


Event = Progress | Text | Idle | Finished


def stream_mode(job: Job) -> StreamMode:
    """How a job streams: `tokens` (plain, one sample: text as the engine produces it),
    `segments` (a decoding strategy with one sample: each appended segment), or `buffered`
    (everything else, and whenever per-token logprobs are asked: progress while sampling,
    then the chosen texts)."""
    kind = strategy_of(job).kind
    live = job.samples == 1 and job.logprobs is None and not job.buffered
    if live and kind == "plain":
        return "tokens"
    if live and kind == "decode":
        return "segments"
    return "buffered"


async def events(
    job: Job, engine: Engine, idle_s: float = 5.0, calibration: Calibration | None = None
) -> AsyncIterator[Event]:
    """The job as a stream of events, `Finished` last. Closing the iterator cancels the job
    (and so its engine work)."""
    if stream_mode(job) == "tokens":
        async for event in _token_events(job, engine):
            yield event
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()

    def progress(done: int, total: int) -> None:  # called from the engine's thread
        loop.call_soon_threadsafe(queue.put_nowait, Progress(done, total))

    def stop(reason: str, done: int) -> None:  # after the last progress report, in order
        loop.call_soon_threadsafe(queue.put_nowait, Progress(done, job.samples, reason))

    if stream_mode(job) == "buffered":
        hooks = Hooks(on_progress=progress, on_stop=stop)
        yield Progress(0, strategy_of(job).progress_total(job.options, job.samples))
    else:  # a decode appends text on the event loop
        hooks = Hooks(on_text=lambda text: queue.put_nowait(Text(text)))
    task = asyncio.ensure_future(run(job, engine, hooks, calibration))
    try:
        async for item in until_done(queue, task, idle_s):
            yield Idle() if item is None else item
        yield Finished(task.result())
    finally:
        if not task.done():
            task.cancel()


async def _token_events(job: Job, engine: Engine) -> AsyncIterator[Event]:
    started = asyncio.get_running_loop().time()
    async for piece in engine.stream(job.prompt_ids, job.params):
        if piece.sample is None:
            if piece.text:
                yield Text(piece.text)
            continue
        elapsed = asyncio.get_running_loop().time() - started
        gen = Generation([piece.sample], piece.prompt_tokens, 0.0, elapsed)
        out = Outcome(job, gen, None, [0], 0.0, gen.exact)
        tracing.timed(  # a token stream's one engine call, as a span once it is done
            "ponder.run",
            elapsed,
            strategy=job.strategy,
            samples=1,
            engine=engine.model_name,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
        )
        observe(out)
        yield Finished(out)


async def until_done(
    queue: asyncio.Queue[T], task: asyncio.Future[Any], tick: float | None = None
) -> AsyncIterator[T | None]:
    """Items put on `queue` while `task` runs (then the rest); None every `tick` seconds idle."""
    while True:
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait(
            {getter, task}, timeout=tick, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            yield getter.result()
            continue
        getter.cancel()
        if task.done():
            await asyncio.sleep(0)  # puts scheduled from other threads before the end land
            while not queue.empty():
                yield queue.get_nowait()
            return
        yield None
