"""Run a Plan: generate on the engine, select with a pure strategy, produce body or SSE events."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from .. import metrics
from ..decoding import cntp_run
from ..engines.base import Engine, Generation
from ..strategies import DECODERS, SELECTORS, majority_vote
from ..strategies.cntp import single_decision
from .errors import ApiError, ClientGone, error_body, to_api_error
from .plan import Plan
from .render import (
    ChunkWriter,
    Outcome,
    chat_logprobs,
    completion_logprobs,
    echo_offset,
    ponder_object,
    token_chunks,
    usage,
)

T = TypeVar("T")

USES_DISTRIBUTION_STATS = frozenset({"self_certainty", "cntp"})
"""Strategies whose scores need kl_uniform / entropy; the others use only sampled-token
logprobs, which every engine returns exactly."""

KEEPALIVE_S = 5.0
DISCONNECT_POLL_S = 0.25


async def execute(
    plan: Plan,
    engine: Engine,
    on_progress: Callable[[int, int], None] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Outcome:
    """Generate the plan's samples (one engine call, or CNTP's session), then select off the
    event loop; record the request's metrics."""
    if plan.strategy in DECODERS:
        out = await _execute_cntp(plan, engine, on_progress, on_text)
    else:
        out = await _execute_selection(plan, engine, on_progress)
    _observe(out)
    return out


async def _execute_selection(
    plan: Plan, engine: Engine, on_progress: Callable[[int, int], None] | None
) -> Outcome:
    gen = await engine.sample(plan.prompt_ids, plan.params, plan.samples, on_progress)
    if plan.strategy not in SELECTORS:
        return Outcome(plan, gen, None, list(range(len(gen.samples))), 0.0, gen.exact)
    t0 = time.perf_counter()
    decision = await asyncio.to_thread(SELECTORS[plan.strategy], gen.samples, plan.options)
    select_s = time.perf_counter() - t0
    exact = decision.exact and (gen.exact or plan.strategy not in USES_DISTRIBUTION_STATS)
    return Outcome(plan, gen, decision, decision.ranking[: plan.n], select_s, exact)


def _observe(out: Outcome) -> None:
    gen, d = out.generation, out.decision
    use = usage(gen)
    metrics.observe_outcome(
        out.plan.strategy,
        queue_s=gen.queue_s,
        generate_s=gen.generate_s,
        select_s=out.select_s,
        samples=len(gen.samples),
        prompt_tokens=use["prompt_tokens"],
        completion_tokens=use["completion_tokens"],
        confidence=d.confidence if d else None,
        winner_votes=(d.tally[0].votes if d.tally else 0) if d else None,
    )


async def _execute_cntp(
    plan: Plan,
    engine: Engine,
    on_progress: Callable[[int, int], None] | None,
    on_text: Callable[[str], None] | None,
) -> Outcome:
    """N CNTP decodes; one is reported as is, several are majority-voted (CNTP + SC)."""
    opts = plan.options
    results = await cntp_run(
        engine, plan.prompt_ids, plan.params, opts.cntp, plan.samples, on_progress, on_text
    )
    samples = [r.sample for r in results]
    gen = Generation(
        samples=samples,
        prompt_tokens=results[0].prompt_tokens,
        queue_s=sum(r.queue_s for r in results),
        generate_s=sum(r.generate_s for r in results),
        unused_tokens=sum(r.unused_tokens for r in results),
        exact=all(r.exact for r in results),
    )
    t0 = time.perf_counter()
    if len(samples) == 1:
        decision = single_decision(samples[0], opts.answer)
        notes = results[0].stats(with_steps=plan.include_candidates)
    else:
        decision = await asyncio.to_thread(majority_vote.select, samples, opts)
        counts = [r.counts() for r in results]
        notes = {k: sum(c[k] for c in counts) for k in counts[0]}
        for key in notes:
            decision.scores[key] = [float(c[key]) for c in counts]
    decision = dataclasses.replace(decision, strategy="cntp", notes={**decision.notes, **notes})
    select_s = time.perf_counter() - t0
    return Outcome(plan, gen, decision, decision.ranking[: plan.n], select_s, gen.exact)


async def _until_done(
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
            while not queue.empty():
                yield queue.get_nowait()
            return
        yield None


def _final_chunks(w: ChunkWriter, out: Outcome) -> AsyncIterator[str]:
    """The end of a buffered or segment stream: the finish reasons with `ponder`, then (if
    asked) usage on its own chunk with no choices, as OpenAI sends it."""
    samples = out.generation.samples
    finals = [w.delta(k, finish_reason=samples[i].finish_reason) for k, i in enumerate(out.choices)]
    extra: dict[str, Any] = {}
    if (meta := ponder_object(out)) is not None:
        extra["ponder"] = meta
    events = [sse(w.chunk(finals, **extra))]
    if out.plan.include_usage:
        events.append(sse(w.chunk([], usage=usage(out.generation))))
    return _iterate(events)


async def _iterate(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        yield item


def _choice_chunks(w: ChunkWriter, out: Outcome, k: int, i: int) -> list[dict[str, Any]]:
    """Choice k (sample i) as content chunks cut on token boundaries, each with its tokens'
    logprobs when asked; an echoed prompt (completions) comes first."""
    plan, sample = out.plan, out.generation.samples[i]
    chunks: list[dict[str, Any]] = []
    offset = 0
    if plan.echo_text is not None:
        prompt = out.generation.prompt_logprobs
        lp = None if plan.logprobs is None else completion_logprobs(None, prompt=prompt)
        chunks.append(w.chunk([w.delta(k, text=plan.echo_text, logprobs=lp)]))
        offset = echo_offset(out)
    for text, positions in token_chunks(sample):
        lp = None
        if plan.logprobs is not None:
            lp = (
                chat_logprobs(sample, positions)
                if plan.kind == "chat"
                else completion_logprobs(sample, positions, offset=offset)
            )
        chunks.append(w.chunk([w.delta(k, text=text, logprobs=lp)]))
        offset += len(text)
    return chunks


def _shutting_down() -> ApiError:
    return ApiError(
        503,
        "the server is shutting down: retry the request",
        code="shutting_down",
        headers={"Retry-After": "1"},
    )


def _deadline_error(timeout: float | None) -> ApiError:
    return ApiError(504, f"the request took longer than {timeout:g} s", code="deadline_exceeded")


async def until_done_or_gone(
    request: Any, coro: Any, timeout: float | None, closing: asyncio.Event | None = None
) -> Outcome:
    """Await `coro` (an execute()), cancelling it — and so the engine's work on it — when the
    client disconnects, the deadline passes (504) or the server's grace period ends (503)."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if task in done:
                result: Outcome = task.result()
                return result
            if await request.is_disconnected():
                raise ClientGone()
            if deadline is not None and loop.time() > deadline:
                raise _deadline_error(timeout)
            if closing is not None and closing.is_set():
                raise _shutting_down()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def with_deadline(
    events: AsyncIterator[str],
    timeout: float | None,
    on_end: Callable[[], None],
    closing: asyncio.Event | None = None,
) -> AsyncIterator[str]:
    """Pass SSE events through; past the deadline (504) or at the end of the server's grace
    period (503), stop the stream (which cancels its engine work) with one error event and
    [DONE]. `on_end` runs however the stream ends."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    stop = asyncio.ensure_future(closing.wait()) if closing is not None else None
    nxt: asyncio.Future[str] | None = None
    try:
        while True:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            nxt = asyncio.ensure_future(events.__anext__())
            waiters = {nxt} if stop is None else {nxt, stop}
            done, _ = await asyncio.wait(waiters, timeout=remaining, return_when="FIRST_COMPLETED")
            if nxt in done:
                try:
                    event = nxt.result()
                except StopAsyncIteration:
                    return
                yield event
                continue
            nxt.cancel()
            with contextlib.suppress(BaseException):
                await nxt
            err = _shutting_down() if stop is not None and stop in done else None
            yield _error_event(err or _deadline_error(timeout))
            yield DONE
            return
    finally:
        if stop is not None:
            stop.cancel()
        if nxt is not None and not nxt.done():  # the client left mid-event: stop its work
            nxt.cancel()
            with contextlib.suppress(BaseException):
                await nxt
        with contextlib.suppress(BaseException):
            await events.aclose()  # type: ignore[attr-defined]
        on_end()


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"


def _error_event(exc: BaseException) -> str:
    err = to_api_error(exc)
    return sse(error_body(err.status, err.message, err.param, err.code))


async def stream_tokens(plan: Plan, engine: Engine) -> AsyncIterator[str]:
    """Strategy `none`, one choice, no logprobs: real token streaming as the engine produces
    text (an echoed prompt first)."""
    w = ChunkWriter(plan)
    try:
        yield sse(w.chunk([w.delta(0, role=True, text="")]))
        if plan.echo_text:
            yield sse(w.chunk([w.delta(0, text=plan.echo_text)]))
        started = time.perf_counter()
        async for piece in engine.stream(plan.prompt_ids, plan.params):
            if piece.sample is None:
                if piece.text:
                    yield sse(w.chunk([w.delta(0, text=piece.text)]))
                continue
            gen = Generation(
                [piece.sample], piece.prompt_tokens, 0.0, time.perf_counter() - started
            )
            _observe(Outcome(plan, gen, None, [0], 0.0, gen.exact))
            yield sse(w.chunk([w.delta(0, finish_reason=piece.sample.finish_reason)]))
            if plan.include_usage:
                yield sse(w.chunk([], usage=usage(gen)))
    except Exception as exc:  # after the first byte an error is one event, then [DONE]
        yield _error_event(exc)
    yield DONE


def _progress(w: ChunkWriter, done: int, total: int) -> str:
    """A progress event SDKs deliver: an empty delta on choice 0 whose `ponder.progress`
    says how many samples are finished."""
    return sse(w.chunk([w.delta(0, text="")], ponder={"progress": {"done": done, "total": total}}))


async def stream_buffered(plan: Plan, engine: Engine) -> AsyncIterator[str]:
    """Selection strategies (and `none` with n > 1 or logprobs, CNTP with samples > 1): the
    role chunk at once, progress chunks (`ponder.progress`) while samples are generated,
    then the chosen texts cut on token boundaries (with their logprobs when asked), the
    finish chunk with `ponder`, and usage on its own chunk."""
    w = ChunkWriter(plan)
    loop = asyncio.get_running_loop()
    progress: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def on_progress(done: int, total: int) -> None:
        loop.call_soon_threadsafe(progress.put_nowait, (done, total))

    task = asyncio.ensure_future(execute(plan, engine, on_progress))
    try:
        yield sse(w.chunk([w.delta(k, role=True, text="") for k in range(plan.n)]))
        yield _progress(w, 0, plan.samples)
        async for item in _until_done(progress, task, KEEPALIVE_S):
            yield ": keep-alive\n\n" if item is None else _progress(w, *item)
        out = task.result()
        for k, i in enumerate(out.choices):
            for chunk in _choice_chunks(w, out, k, i):
                yield sse(chunk)
        async for event in _final_chunks(w, out):
            yield event
    except Exception as exc:
        yield _error_event(exc)
    finally:
        if not task.done():
            task.cancel()
    yield DONE


async def stream_segments(plan: Plan, engine: Engine) -> AsyncIterator[str]:
    """CNTP with one sample: each appended segment is sent as soon as it is chosen."""
    w = ChunkWriter(plan)
    texts: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.ensure_future(execute(plan, engine, on_text=texts.put_nowait))
    try:
        yield sse(w.chunk([w.delta(0, role=True, text="")]))
        async for piece in _until_done(texts, task, KEEPALIVE_S):
            yield ": keep-alive\n\n" if piece is None else sse(w.chunk([w.delta(0, text=piece)]))
        async for event in _final_chunks(w, task.result()):
            yield event
    except Exception as exc:
        yield _error_event(exc)
    finally:
        if not task.done():
            task.cancel()
    yield DONE
