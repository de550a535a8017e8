"""One engine call's N requests to vLLM, run together (`FanOut`): progress as each finishes,
and, when a caller judges finished samples, the rest cut short once one says enough. No vLLM
import: it drives whatever `one`, `judge` and `abort` it is given (unit-tested with fakes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..errors import EngineError
from ..types import ProgressCallback


class FanOut:
    """Runs request i as `one(i)` for every i, concurrently. Each finished output is counted
    (`on_progress(finished, n)`); with `judge`, it is then judged off the event loop, one
    output at a time. The first `judge` that returns True ends the call: the requests still
    running are aborted (`abort(their ids)`), and an aborted request that ends in an
    `EngineError` yields None instead of failing the call. Any other error fails the call
    and cancels the rest (the caller aborts them in vLLM)."""

    def __init__(
        self,
        ids: Sequence[str],
        one: Callable[[int], Awaitable[Any]],
        abort: Callable[[list[str]], Awaitable[None]],
        on_progress: ProgressCallback | None = None,
        judge: Callable[[int, Any], bool] | None = None,
    ) -> None:
        self.ids = list(ids)
        self._one = one
        self._abort = abort
        self._on_progress = on_progress
        self._judge = judge
        self._judging = asyncio.Lock()
        self.done: set[int] = set()
        self.enough = False
        """A judge said enough: the requests not done by then were aborted."""

    async def run(self) -> list[Any]:
        """Every request's final output, in request order (None: cut short, nothing sent)."""
        tasks = [asyncio.ensure_future(self._run(i)) for i in range(len(self.ids))]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            raise

    async def _run(self, i: int) -> Any:
        try:
            out = await self._one(i)
        except EngineError:
            if self.enough:  # aborted by a judge, and vLLM sent no final output for it
                return None
            raise
        self.done.add(i)
        if self._on_progress is not None:
            self._on_progress(len(self.done), len(self.ids))
        if self._judge is not None and not self.enough:
            judge = self._judge
            async with self._judging:  # conversion and grading grow with the text
                stop = not self.enough and await asyncio.to_thread(judge, i, out)
            if stop:
                self.enough = True
                running = [rid for j, rid in enumerate(self.ids) if j not in self.done]
                with contextlib.suppress(Exception):
                    await self._abort(running)
        return out
