"""Run a Plan: generate on the engine, select with a pure strategy, produce body or SSE events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from ..engines.base import Engine
from ..strategies import SELECTORS
from .errors import error_body, to_api_error
from .plan import Plan
from .render import ChunkWriter, Outcome, ponder_object, usage

KEEPALIVE_S = 5.0
TEXT_CHUNK = 64


async def execute(plan: Plan, engine: Engine, on_progress: Any = None) -> Outcome:
    """Generate the plan's samples in one engine call, then select (off the event loop)."""
    gen = await engine.sample(plan.prompt_ids, plan.params, plan.samples, on_progress)
    if plan.strategy not in SELECTORS:
        return Outcome(plan, gen, None, list(range(len(gen.samples))), 0.0, engine.exact_stats)
    t0 = time.perf_counter()
    decision = await asyncio.to_thread(SELECTORS[plan.strategy], gen.samples, plan.options)
    select_s = time.perf_counter() - t0
    return Outcome(
        plan,
        gen,
        decision,
        decision.ranking[: plan.n],
        select_s,
        engine.exact_stats and decision.exact,
    )


def sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


DONE = "data: [DONE]\n\n"


def _error_event(exc: BaseException) -> str:
    err = to_api_error(exc)
    return sse(error_body(err.status, err.message, err.param, err.code))


async def stream_tokens(plan: Plan, engine: Engine) -> AsyncIterator[str]:
    """Strategy `none`, one choice: real token streaming as the engine produces text."""
    w = ChunkWriter(plan)
    try:
        yield sse(w.chunk([w.delta(0, role=True, text="")]))
        async for piece in engine.stream(plan.prompt_ids, plan.params):
            if piece.sample is None:
                if piece.text:
                    yield sse(w.chunk([w.delta(0, text=piece.text)]))
                continue
            s = piece.sample
            yield sse(w.chunk([w.delta(0, finish_reason=s.finish_reason)]))
            if plan.include_usage:
                completion = s.n_tokens
                yield sse(
                    w.chunk(
                        [],
                        usage={
                            "prompt_tokens": piece.prompt_tokens,
                            "completion_tokens": completion,
                            "total_tokens": piece.prompt_tokens + completion,
                        },
                    )
                )
    except Exception as exc:  # after the first byte an error is one event, then [DONE]
        yield _error_event(exc)
    yield DONE


async def stream_buffered(plan: Plan, engine: Engine) -> AsyncIterator[str]:
    """Selection strategies (and `none` with n > 1): progress comments while samples are
    generated, then the chosen texts as content chunks, `ponder` and usage in the last chunk."""
    w = ChunkWriter(plan)
    loop = asyncio.get_running_loop()
    progress: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def on_progress(done: int, total: int) -> None:
        loop.call_soon_threadsafe(progress.put_nowait, (done, total))

    task = asyncio.ensure_future(execute(plan, engine, on_progress))
    try:
        yield f": progress 0/{plan.samples}\n\n"
        while not task.done():
            getter = asyncio.ensure_future(progress.get())
            done, _ = await asyncio.wait(
                {getter, task}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in done:
                k, total = getter.result()
                yield f": progress {k}/{total}\n\n"
            else:
                getter.cancel()
                if not done:
                    yield ": keep-alive\n\n"
        out = task.result()
        samples = out.generation.samples
        for k, i in enumerate(out.choices):
            text = samples[i].text
            yield sse(w.chunk([w.delta(k, role=True, text="")]))
            for start in range(0, len(text), TEXT_CHUNK):
                yield sse(w.chunk([w.delta(k, text=text[start : start + TEXT_CHUNK])]))
        finals = [
            w.delta(k, finish_reason=samples[i].finish_reason) for k, i in enumerate(out.choices)
        ]
        extra: dict[str, Any] = {}
        if (meta := ponder_object(out)) is not None:
            extra["ponder"] = meta
        if plan.include_usage:
            extra["usage"] = usage(out.generation)
        yield sse(w.chunk(finals, **extra))
    except Exception as exc:
        yield _error_event(exc)
    finally:
        if not task.done():
            task.cancel()
    yield DONE
