"""The llama.cpp batcher's scheduling with a fake model (no llama.cpp): admission order, the
per-request share of sequences and rows, samples started in parts, cancellation in each
phase, and grading off the batcher's thread."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import numpy as np
import pytest

from ponder.engines.batcher import DECODE_ROWS, Batcher, Request
from ponder.errors import EngineError
from ponder.types import Generation, Sample, SamplingParams

VOCAB = 8
WAIT_POLLS = 6000
"""Polls of 5 ms (30 s) for the batcher's thread to reach a state: a bound for a stuck
thread, not a speed (a busy machine may take seconds)."""
EOS = 7


class FakeModel:
    """A deterministic `batcher.Model`: the logits of a row depend on its token and position
    only; token 7 ends a sequence. It records every decode call and KV edit, and can hold
    the batcher's thread inside a decode (`gate`)."""

    def __init__(self, n_seq: int = 6, max_samples: int = 4, n_ctx: int = 4096) -> None:
        self.n_vocab, self.n_ctx, self.n_seq, self.max_samples = VOCAB, n_ctx, n_seq, max_samples
        self.punct: frozenset[int] = frozenset()
        self.eog = np.array([EOS], dtype=np.int64)
        self.calls: list[list[tuple[int, int, int, bool]]] = []
        self.cells: dict[int, set[int]] = {}
        self.gate: threading.Event | None = None
        self.hold_rows = 0
        """With `gate`: a call of this many rows waits for the gate (`entered` is set)."""
        self.entered = threading.Event()

    def decode(self, rows: list[tuple[int, int, int, bool]]) -> np.ndarray:
        if self.gate is not None and len(rows) == self.hold_rows:
            self.entered.set()
            self.gate.wait(10)
        self.calls.append(list(rows))
        for _, pos, seq, _ in rows:
            self.cells.setdefault(seq, set()).add(pos)
        out = [
            np.array([((tok * 3 + pos + v) % 5) * 1.0 - (v == EOS) * 4.0 for v in range(VOCAB)])
            for tok, pos, _, want in rows
            if want
        ]
        return np.asarray(out, np.float32).reshape(len(out), VOCAB)

    def seq_rm(self, seq: int, p0: int, p1: int) -> None:
        kept = self.cells.get(seq, set())
        lo, hi = (0 if p0 < 0 else p0), (1 << 30 if p1 < 0 else p1)
        self.cells[seq] = {p for p in kept if not lo <= p < hi}

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        lo, hi = (0 if p0 < 0 else p0), (1 << 30 if p1 < 0 else p1)
        self.cells.setdefault(dst, set()).update(p for p in self.cells.get(src, ()) if lo <= p < hi)

    def clear(self) -> None:
        self.cells.clear()

    def piece(self, token: int) -> bytes:
        return f"<{token}>".encode()

    def text(self, token: int, special: bool = False) -> str:
        return f"<{token}>"

    def is_eog(self, token: int) -> bool:
        return token == EOS


def params(max_tokens: int = 6, seed: int = 1) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed)


def run_all(batcher: Batcher, reqs: list[Request]) -> list[Generation | BaseException]:
    async def go() -> list[Generation | BaseException]:
        return list(await asyncio.gather(*(batcher.run(r) for r in reqs), return_exceptions=True))

    return asyncio.run(go())


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def batcher(model: FakeModel):
    b = Batcher(model)
    yield b
    b.stop()


def test_samples_are_the_same_alone_or_in_parts(model: FakeModel, batcher: Batcher) -> None:
    """4 samples at once (share 4) and beside another request (share 2: two at a time) are
    the same tokens: each sample has its own seeded RNG and starts from the prompt's row."""
    alone = run_all(batcher, [Request([1, 2, 3], params(), 4)])[0]
    assert isinstance(alone, Generation)
    both = run_all(batcher, [Request([1, 2, 3], params(), 4), Request([4, 5], params(seed=9), 4)])
    assert isinstance(both[0], Generation)
    assert [s.token_ids for s in both[0].samples] == [s.token_ids for s in alone.samples]
    assert [s.index for s in both[0].samples] == [0, 1, 2, 3]


def test_a_request_runs_at_most_its_share_while_others_are_present(model: FakeModel) -> None:
    """With two requests present, each has max_samples / 2 = 2 samples running and decodes at
    most 2 rows per step; the rest start as those finish (parts)."""
    b = Batcher(model)
    try:
        run_all(b, [Request([1, 2], params(max_tokens=8), 4), Request([3], params(seed=5), 4)])
    finally:
        b.stop()
    decodes = [rows for rows in model.calls if all(want for *_, want in rows)]
    for rows in decodes:
        seqs = [seq for _, _, seq, _ in rows]
        assert len(seqs) == len(set(seqs))  # one row per sequence per call
    assert max(len(rows) for rows in decodes) <= 4  # 2 + 2: each request's share of rows


def test_a_short_request_starts_while_a_large_one_holds_every_sample(model: FakeModel) -> None:
    """A request of max_samples samples took every sample's id while alone; a one-sample
    request arriving next still gets a spare id at once, and finishes first."""
    model.gate, model.hold_rows = threading.Event(), 4  # big's 4 samples are all running
    b = Batcher(model)
    done: list[str] = []
    try:

        async def go() -> None:
            big = asyncio.ensure_future(b.run(Request([1, 2], params(max_tokens=40), 4)))
            await asyncio.sleep(0.05)
            small = asyncio.ensure_future(b.run(Request([5], params(max_tokens=2, seed=3), 1)))
            await asyncio.sleep(0.05)
            assert model.gate is not None
            model.gate.set()
            model.gate = None
            for fut in asyncio.as_completed([big, small]):
                gen = await fut
                done.append("small" if len(gen.samples) == 1 else "big")

        asyncio.run(go())
    finally:
        b.stop()
    assert done == ["small", "big"]
    assert b.counters.deferred > 0  # the big request's rows waited their turn


def test_admission_is_in_arrival_order_when_ids_run_out() -> None:
    """Three one-id requests on a model with two ids: the third starts when one leaves, and
    they finish in arrival order when they all take as long."""
    model = FakeModel(n_seq=2, max_samples=1)
    b = Batcher(model)
    try:
        reqs = [Request([i + 1], params(max_tokens=3, seed=i), 1) for i in range(3)]
        gens = run_all(b, reqs)
    finally:
        b.stop()
    assert all(isinstance(g, Generation) for g in gens)
    assert reqs[2].admitted >= min(reqs[0].admitted, reqs[1].admitted)
    assert reqs[2].admitted - reqs[2].submitted >= reqs[0].admitted - reqs[0].submitted


def test_requests_that_hold_every_id_still_progress() -> None:
    """Two ids, two requests of 3 samples: each holds its base id; with no id to be had,
    a request's base goes on with its next sample, so neither waits forever."""
    model = FakeModel(n_seq=2, max_samples=3)
    b = Batcher(model)
    try:
        gens = run_all(b, [Request([1], params(seed=1), 3), Request([2], params(seed=2), 3)])
    finally:
        b.stop()
    assert all(isinstance(g, Generation) and len(g.samples) == 3 for g in gens)


@pytest.mark.parametrize(("phase", "hold"), [("waiting", 1), ("prefilling", 32), ("decoding", 1)])
def test_cancelling_in_each_phase(phase: str, hold: int) -> None:
    """A request cancelled in each phase (the batcher's thread held inside a decode call of
    `hold` rows while it is in that phase) leaves the engine, and the request after it draws
    the samples it draws alone."""
    model = FakeModel(n_seq=2, max_samples=1)
    b = Batcher(model)
    try:
        alone = run_all(b, [Request([9, 9], params(seed=4), 1)])[0]
        assert isinstance(alone, Generation)

        async def go() -> Generation:
            model.gate, model.hold_rows = threading.Event(), hold
            if phase == "waiting":  # the thread is held in another request's prefill
                blocker = asyncio.ensure_future(b.run(Request([3], params(max_tokens=4), 1)))
                while not model.entered.is_set():
                    await asyncio.sleep(0.005)
            prompt = list(range(1, 7)) * 40 if phase == "prefilling" else [5, 6]
            v = Request(prompt, params(max_tokens=40), 1)
            victim = asyncio.ensure_future(b.run(v))
            for _ in range(WAIT_POLLS):
                submitted = v.resolve is not None
                if submitted and v.phase == phase and model.entered.is_set():
                    break
                await asyncio.sleep(0.005)
            assert v.phase == phase
            victim.cancel()
            with pytest.raises(asyncio.CancelledError):
                await victim
            assert model.gate is not None
            model.gate.set()
            for _ in range(WAIT_POLLS):  # the batcher thread sees the cancel at its next step
                if v.phase == "finished":
                    break
                await asyncio.sleep(0.005)
            assert v.phase == "finished"
            if phase == "waiting":
                await blocker
            model.gate = None
            return await b.run(Request([9, 9], params(seed=4), 1))

        other = asyncio.run(go())
    finally:
        b.stop()
    assert other.samples[0].token_ids == alone.samples[0].token_ids
    assert not b.active and not b.waiting


def test_grading_runs_off_the_batcher_thread_and_its_error_fails_one_request() -> None:
    """`on_sample` runs in the grader pool: a slow one does not stall the other request's
    steps, and an exception in it fails its own request only."""
    model = FakeModel(n_seq=6, max_samples=4)
    b = Batcher(model)
    threads: set[str] = set()
    slow = threading.Event()

    def grade_slowly(sample: Sample) -> bool:
        threads.add(threading.current_thread().name)
        slow.wait(60)
        return False

    def grade_badly(sample: Sample) -> bool:
        raise ValueError("grader bug")

    try:

        async def go() -> list[Generation | BaseException]:
            a = Request([1], params(max_tokens=2), 2, on_sample=grade_slowly)
            c = Request([2], params(max_tokens=2, seed=2), 1, on_sample=grade_badly)
            fa = asyncio.ensure_future(b.run(a))
            await asyncio.sleep(0.05)
            d = Request([3], params(max_tokens=20, seed=3), 1)
            plain = await b.run(d)  # finishes while a's grading is still stuck
            assert not fa.done()
            slow.set()
            rest = await asyncio.gather(fa, b.run(c), return_exceptions=True)
            return [plain, *rest]

        plain, slow_done, failed = asyncio.run(go())
    finally:
        b.stop()
    assert isinstance(plain, Generation) and isinstance(slow_done, Generation)
    assert isinstance(failed, ValueError) and "grader bug" in str(failed)
    assert threads and all(t.startswith("ponder-grade") for t in threads)


def test_enough_stops_the_running_samples_and_starts_no_more() -> None:
    model = FakeModel(n_seq=6, max_samples=4)
    b = Batcher(model)
    seen: list[int] = []

    def first_is_enough(sample: Sample) -> bool:
        seen.append(sample.index)
        return True

    try:
        gen = run_all(b, [Request([1], params(max_tokens=30), 4, on_sample=first_is_enough)])[0]
    finally:
        b.stop()
    assert isinstance(gen, Generation)
    assert len(seen) >= 1
    finished = [s for s in gen.samples if s.finish_reason != "cancelled"]
    assert finished and len(gen.samples) <= 4


def test_decode_calls_stay_below_the_attention_tile() -> None:
    """No call carries 64 rows or more (llama.cpp's tiled attention kernel would change the
    rounding with the batch's layout): 70 live samples are split into balanced calls."""
    model = FakeModel(n_seq=80, max_samples=70)
    b = Batcher(model)
    try:
        gen = run_all(b, [Request([1, 2], params(max_tokens=3), 70)])[0]
    finally:
        b.stop()
    assert isinstance(gen, Generation) and len(gen.samples) == 70
    assert max(len(rows) for rows in model.calls) <= DECODE_ROWS
    assert any(len(rows) == 35 for rows in model.calls)


def test_an_engine_error_fails_the_running_requests_and_resets() -> None:
    class Broken(FakeModel):
        def decode(self, rows: list[tuple[int, int, int, bool]]) -> np.ndarray:
            if any(seq == 0 for *_, seq, _ in rows) and len(self.calls) > 2:
                raise EngineError("boom")
            return super().decode(rows)

    model = Broken(n_seq=4, max_samples=2)
    b = Batcher(model)
    try:
        got = run_all(b, [Request([1], params(max_tokens=40), 1)])[0]
        again = run_all(b, [Request([2], params(max_tokens=2), 1)])[0]
    finally:
        b.stop()
    assert isinstance(got, EngineError)
    assert isinstance(again, (Generation, EngineError))
    assert b.kv.free == sorted(b.kv.free)


def test_step_cost_fits_a_line_and_bounds_a_shared_step() -> None:
    """Calls costing 15 ms + 15 ms per row (this project's CPU): a shared step beside a
    one-row request may carry 3 rows (2.5 x 30 ms = 75 ms >= 15 + 15 x 3); beside an 8-row
    request, 21. Before any fit, t(k) is taken as k + 1."""
    from ponder.engines.batcher import StepCost

    cost = StepCost()
    assert cost.fit() == (1.0, 1.0) and cost.rows_within(2.5, 1) == 4
    for k in [1, 64, 1, 32, 2, 33] * 10:
        cost.observe(k, 0.015 + 0.015 * k)
    a, b = cost.fit()
    assert a == pytest.approx(0.015, rel=1e-6) and b == pytest.approx(0.015, rel=1e-6)
    assert cost.rows_within(2.5, 1) == 4
    assert cost.rows_within(2.5, 8) == 21


def test_quotas_share_a_step_max_min_fairly() -> None:
    from ponder.engines.batcher import StepCost, quotas

    cost = StepCost()
    for k in [1, 64, 1, 32] * 10:
        cost.observe(k, 0.015 + 0.015 * k)
    assert quotas({1: 64}, cost) == {1: 64}  # alone: every row it has
    assert quotas({1: 64, 2: 1}, cost) == {2: 1, 1: 3}  # the short one's step stays cheap
    assert quotas({1: 8, 2: 8, 3: 8, 4: 8}, cost) == {1: 5, 2: 5, 3: 5, 4: 6}
    assert quotas({k: 1 for k in range(10)}, cost) == {k: 1 for k in range(10)}


def test_min_tokens_and_ignore_eos() -> None:
    """Issue 25 item 7: `min_tokens` masks the end-of-generation token from the processed
    distribution until then (the raw logprob stays the model's), `ignore_eos` generates past
    it to max_tokens."""
    model = FakeModel()
    b = Batcher(model)
    try:
        free = run_all(b, [Request([1], params(max_tokens=30, seed=s), 1) for s in range(8)])
        ended = [g.samples[0].n_tokens for g in free if isinstance(g, Generation)]
        assert min(ended) < 20  # without min_tokens, some samples end early on EOS
        p = dataclasses.replace(params(max_tokens=30), min_tokens=20)
        held = run_all(b, [Request([1], dataclasses.replace(p, seed=s), 1) for s in range(8)])
        for g in held:
            assert isinstance(g, Generation)
            s = g.samples[0]
            assert s.n_tokens >= 20 and EOS not in s.token_ids[:20]
        q = dataclasses.replace(params(max_tokens=30), ignore_eos=True)
        long = run_all(b, [Request([1], dataclasses.replace(q, seed=s), 1) for s in range(8)])
        for g in long:
            assert isinstance(g, Generation)
            assert g.samples[0].n_tokens == 30 and g.samples[0].finish_reason == "length"
        assert any(EOS in g.samples[0].token_ids for g in long)  # sampled, and went on
    finally:
        b.stop()
