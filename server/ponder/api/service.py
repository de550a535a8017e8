"""Run a Plan through the runner and turn the result into a response body or SSE events: the
HTTP side of a request (deadlines, disconnects, shutdown, chunk formats)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from .. import runner
from ..calibration import Calibration
from ..runner import Finished, Idle, Outcome, Progress, Text
from ..types import ENGINE_WAIT, Engine
from .errors import ApiError, ClientGone, error_body, to_api_error
from .plan import Plan
from .render import (
    ChunkWriter,
    chat_logprobs,
    completion_logprobs,
    echo_offset,
    finish_reason,
    ponder_object,
    token_chunks,
    tool_calls,
    usage,
)

T = TypeVar("T")

KEEPALIVE_S = 5.0
DISCONNECT_POLL_S = 0.25


def _shutting_down() -> ApiError:
    return ApiError(
        503,
        "the server is shutting down: retry the request",
        code="shutting_down",
        headers={"Retry-After": "1"},
    )


class EngineClock:
    """A request's deadline, counted from its arrival, waiting for the engine included. An
    engine that queues requests itself (the llama.cpp batcher) reports each admission
    (`types.ENGINE_WAIT`): a request still waiting for its first admission when the deadline
    passes never started, and gets 503 + Retry-After (safe to retry); one that started gets
    504."""

    def __init__(self, timeout: float | None, reports_admission: bool = False) -> None:
        self.timeout = timeout
        self.start = asyncio.get_running_loop().time()
        self.waited = 0.0
        self.started = not reports_admission
        ENGINE_WAIT.set(self.add)

    def add(self, seconds: float) -> None:
        self.waited += seconds
        self.started = True

    def remaining(self) -> float | None:
        if self.timeout is None:
            return None
        return self.start + self.timeout - asyncio.get_running_loop().time()

    def expired(self) -> ApiError:
        """The error of a request whose deadline passed (see the class docstring)."""
        if not self.started:
            return ApiError(
                503,
                f"the engine is busy: the request could not start within its "
                f"{self.timeout:g} s deadline; retry it",
                code="overloaded",
                headers={"Retry-After": str(max(1, math.ceil((self.timeout or 0) / 4)))},
            )
        return ApiError(
            504, f"the request took longer than {self.timeout:g} s", code="deadline_exceeded"
        )


async def until_done_or_gone(
    request: Any, coro: Awaitable[T], clock: EngineClock, closing: asyncio.Event | None = None
) -> T:
    """Await `coro` (a runner.run or run_all), cancelling it — and so the engine's work on it —
    when the client disconnects, the deadline passes (504) or the server's grace period ends
    (503)."""
    task = asyncio.ensure_future(coro)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if task in done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone()
            left = clock.remaining()
            if left is not None and left < 0:
                raise clock.expired()
            if closing is not None and closing.is_set():
                raise _shutting_down()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def with_deadline(
    events: AsyncIterator[str],
    clock: EngineClock,
    on_end: Callable[[], None],
    closing: asyncio.Event | None = None,
) -> AsyncIterator[str]:
    """Pass SSE events through; past the deadline (504) or at the end of the server's grace
    period (503), stop the stream (which cancels its engine work) with one error event and
    [DONE]. `on_end` runs however the stream ends."""
    stop = asyncio.ensure_future(closing.wait()) if closing is not None else None
    nxt: asyncio.Future[str] | None = None
    try:
        while True:
            nxt = asyncio.ensure_future(events.__anext__())
            waiters = {nxt} if stop is None else {nxt, stop}
            while True:  # the deadline moves while the request waits for the engine
                left = clock.remaining()
                timeout = None if left is None else max(left, 0.0)
                done, _ = await asyncio.wait(
                    waiters, timeout=timeout, return_when="FIRST_COMPLETED"
                )
                again = clock.remaining()
                if done or again is None or again <= 0:
                    break
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
            yield _error_event(err or clock.expired())
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
    body = error_body(err.status, err.public, err.param, err.code)
    body["error"]["status"] = err.status  # the stream's HTTP status is 200: say the real one
    return sse(body)


async def stream(
    plan: Plan, engine: Engine, calibration: Calibration | None = None
) -> AsyncIterator[str]:
    """A streamed response: the role chunk at once (and an echoed prompt, when the text is
    streamed live), then the runner's events as chunks, the finish chunk, usage, [DONE].
    After the first byte an error is one error event, then [DONE]."""
    w = ChunkWriter(plan)
    buffered = runner.stream_mode(plan.job) == "buffered"
    events = runner.events(plan.job, engine, KEEPALIVE_S, calibration)
    try:
        yield sse(w.chunk([w.delta(k, role=True, text="") for k in range(plan.n)]))
        if plan.echo_text and not buffered:
            yield sse(w.chunk([w.delta(0, text=plan.echo_text)]))
        async for event in events:
            if isinstance(event, Progress):
                yield _progress(w, event)
            elif isinstance(event, Text):
                yield sse(w.chunk([w.delta(0, text=event.text)]))
            elif isinstance(event, Idle):
                yield ": keep-alive\n\n"
            elif isinstance(event, Finished):
                out = event.outcome
                if buffered:
                    for k, i in enumerate(out.choices):
                        for chunk in _choice_chunks(w, plan, out, k, i):
                            yield sse(chunk)
                for chunk in _final_chunks(w, plan, out):
                    yield sse(chunk)
    except Exception as exc:
        yield _error_event(exc)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    yield DONE


def _progress(w: ChunkWriter, event: Progress) -> str:
    """A progress event SDKs deliver: an empty delta on choice 0 whose `ponder.progress`
    says how many samples are finished (and, with adaptive stopping, why sampling ended)."""
    progress: dict[str, Any] = {"done": event.done, "total": event.total}
    if event.stopped is not None:
        progress["stopped"] = event.stopped
    return sse(w.chunk([w.delta(0, text="")], ponder={"progress": progress}))


def _choice_chunks(
    w: ChunkWriter, plan: Plan, out: Outcome, k: int, i: int
) -> list[dict[str, Any]]:
    """Choice k (sample i) as content chunks cut on token boundaries, each with its tokens'
    logprobs when asked; an echoed prompt (completions) comes first."""
    sample = out.generation.samples[i]
    chunks: list[dict[str, Any]] = []
    if plan.kind == "chat" and (calls := tool_calls(plan, sample)) is not None:
        return [w.chunk([w.delta(k, calls=calls)])]
    offset = 0
    if plan.echo_text is not None:
        prompt = out.generation.prompt_logprobs
        lp = None if plan.logprobs is None else completion_logprobs(None, prompt=prompt)
        chunks.append(w.chunk([w.delta(k, text=plan.echo_text, logprobs=lp)]))
        offset = echo_offset(plan, out)
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


def _final_chunks(w: ChunkWriter, plan: Plan, out: Outcome) -> list[dict[str, Any]]:
    """The finish reasons with `ponder`, then (if asked) usage on its own chunk with no
    choices, as OpenAI sends it."""
    samples = out.generation.samples
    finals = [
        w.delta(k, finish_reason=finish_reason(plan, samples[i])) for k, i in enumerate(out.choices)
    ]
    chunks = [w.chunk(finals, ponder=ponder_object(plan, out))]
    if plan.include_usage:
        chunks.append(w.chunk([], usage=usage(out.generation)))
    return chunks
