"""engines/vllm_fanout.FanOut, the vLLM engine's per-call fan-out, driven with fake requests
(no vLLM): order, progress, cutting short, errors and cancellation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ponder.engines.vllm_fanout import FanOut
from ponder.errors import EngineError

IDS = [f"r{i}" for i in range(4)]


class Fake:
    """Request i finishes when its event is set, with output f"out{i}"; an aborted request
    ends in EngineError (as vLLM's generator does when it sends no final output)."""

    def __init__(self) -> None:
        self.release = [asyncio.Event() for _ in IDS]
        self.aborted: list[str] = []

    async def one(self, i: int) -> str:
        await self.release[i].wait()
        if IDS[i] in self.aborted:
            raise EngineError("aborted")
        return f"out{i}"

    async def abort(self, ids: list[str]) -> None:
        self.aborted += ids
        for rid in ids:
            self.release[IDS.index(rid)].set()


def test_outputs_come_back_in_request_order_with_progress_per_finish() -> None:
    async def go() -> tuple[list, list]:
        fake, seen = Fake(), []
        fan = FanOut(IDS, fake.one, fake.abort, on_progress=lambda k, n: seen.append((k, n)))
        task = asyncio.ensure_future(fan.run())
        for i in (2, 0, 3, 1):  # finish out of order
            fake.release[i].set()
            await asyncio.sleep(0)
        return await task, seen

    outs, seen = asyncio.run(go())
    assert outs == ["out0", "out1", "out2", "out3"]
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_judge_saying_enough_aborts_the_rest_which_yield_none() -> None:
    async def go() -> tuple[list, Fake, list]:
        fake, judged = Fake(), []

        def judge(i: int, out: str) -> bool:
            judged.append(i)
            return i == 1

        fan = FanOut(IDS, fake.one, fake.abort, judge=judge)
        task = asyncio.ensure_future(fan.run())
        fake.release[1].set()
        outs = await task
        return outs, fake, judged

    outs, fake, judged = asyncio.run(go())
    assert outs == [None, "out1", None, None]
    assert sorted(fake.aborted) == ["r0", "r2", "r3"]
    assert judged == [1]  # the aborted ones are not judged


def test_judges_run_off_the_event_loop_one_at_a_time() -> None:
    active, most, threads = [0], [0], set()
    lock = threading.Lock()

    def judge(i: int, out: str) -> bool:
        threads.add(threading.get_ident())
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        threading.Event().wait(0.02)
        with lock:
            active[0] -= 1
        return False

    async def go() -> list:
        fake = Fake()
        for e in fake.release:
            e.set()
        return await FanOut(IDS, fake.one, fake.abort, judge=judge).run()

    loop_thread = threading.get_ident()
    assert asyncio.run(go()) == ["out0", "out1", "out2", "out3"]
    assert most[0] == 1 and loop_thread not in threads


def test_an_error_before_enough_fails_the_call_and_cancels_the_rest() -> None:
    async def go() -> list[asyncio.Task]:
        started: list[asyncio.Task] = []

        async def one(i: int) -> str:
            started.append(asyncio.current_task())  # type: ignore[arg-type]
            if i == 0:
                raise EngineError("boom")
            await asyncio.Event().wait()
            return "never"

        async def abort(ids: list[str]) -> None:
            raise AssertionError("not a judge's abort")

        with pytest.raises(EngineError, match="boom"):
            await FanOut(IDS, one, abort).run()
        await asyncio.sleep(0)
        return started

    tasks = asyncio.run(go())
    assert len(tasks) == 4 and all(t.cancelled() for t in tasks[1:])
