"""engines/kvcache.KvCache with a fake context (no llama.cpp): where a prompt is placed
(the one placement rule), what a leaving request keeps, eviction and release."""

from __future__ import annotations

import numpy as np

from ponder.engines.kvcache import PREFILL_CHUNK, KvCache
from ponder.engines.sequences import Request, Seq
from ponder.types import SamplingParams

ROW = np.arange(4, dtype=np.float32)


class FakeCells:
    """Sequence id -> the positions it holds; records the KV edits."""

    def __init__(self, n_seq: int = 4, n_ctx: int = 1000) -> None:
        self.n_seq, self.n_ctx = n_seq, n_ctx
        self.cells: dict[int, set[int]] = {}
        self.edits: list[tuple] = []

    def seq_rm(self, seq: int, p0: int, p1: int) -> None:
        self.edits.append(("rm", seq, p0, p1))
        lo, hi = (0 if p0 < 0 else p0), (1 << 30 if p1 < 0 else p1)
        self.cells[seq] = {p for p in self.cells.get(seq, set()) if not lo <= p < hi}

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        self.edits.append(("cp", src, dst, p0, p1))
        lo, hi = (0 if p0 < 0 else p0), (1 << 30 if p1 < 0 else p1)
        self.cells.setdefault(dst, set()).update(p for p in self.cells.get(src, ()) if lo <= p < hi)

    def clear(self) -> None:
        self.cells.clear()


def request(prompt: list[int], fresh: bool = True, max_tokens: int = 8) -> Request:
    return Request(prompt, SamplingParams(max_tokens=max_tokens), 1, fresh=fresh)


def finished(kv: KvCache, cells: FakeCells, prompt: list[int], out: list[int], fresh=True) -> int:
    """A request that prefilled `prompt` on a fresh id and decoded `out`, then left."""
    req = request(prompt, fresh)
    seq = kv.take()
    cells.cells[seq] = set(range(len(prompt) + len(out)))
    s = Seq(np.random.default_rng(0), seq, 0)
    s.tokens, s.row = list(out), ROW
    req.held, req.seqs, req.base, req.prompt_row = [seq], [s], seq, ROW
    kv.keep_all(req)
    return seq


def test_nothing_to_reuse_places_nowhere() -> None:
    kv = KvCache(FakeCells())
    assert kv.place(request([1, 2, 3]), []) == (-1, 0, None)


def test_the_same_prompt_takes_over_the_cached_sequence_without_prefill() -> None:
    cells = FakeCells()
    kv = KvCache(cells)
    prompt = list(range(70))
    seq = finished(kv, cells, prompt, [], fresh=True)
    # kept with the prompt only: the whole prompt and its row are reusable
    kv.cached[seq].tokens = list(prompt)
    base, keep, row = kv.place(request(prompt), [])
    assert (base, keep) == (seq, 70) and row is ROW
    assert seq not in kv.cached and cells.cells[seq] == set(range(70))


def test_a_fresh_request_reuses_whole_prefill_chunks_only() -> None:
    cells = FakeCells()
    kv = KvCache(cells)
    shared = list(range(PREFILL_CHUNK + 10))
    seq = finished(kv, cells, [*shared, 900, 901], [5, 6])
    base, keep, row = kv.place(request([*shared, 1000, 1001]), [])
    assert base == seq and keep == PREFILL_CHUNK and row is None  # 42 shared -> one chunk
    assert cells.cells[seq] == set(range(PREFILL_CHUNK))
    # less than a chunk in common: a fresh prefill, nothing reused
    seq2 = finished(kv, cells, [*list(range(10)), 7], [5])
    assert kv.place(request([*list(range(10)), 8]), []) == (-1, 0, None)
    assert seq2 in kv.cached


def test_a_sessions_call_reuses_its_whole_history() -> None:
    cells = FakeCells()
    kv = KvCache(cells)
    seq = finished(kv, cells, [1, 2, 3], [4, 5], fresh=False)
    base, keep, row = kv.place(request([1, 2, 3, 4, 5, 6], fresh=False), [])
    assert (base, keep, row) == (seq, 5, None)  # prompt + decoded, prefill only token 6
    # ... but a fresh request does not reuse a session's cells (not a fresh prefill's)
    seq = finished(kv, cells, list(range(40)), [1], fresh=False)
    assert kv.place(request([*list(range(40)), 2]), []) == (-1, 0, None)


def test_a_running_requests_prompt_is_copied_not_taken() -> None:
    cells = FakeCells()
    kv = KvCache(cells)
    prompt = list(range(50))
    running = request(prompt)
    running.base = kv.take()
    running.held, running.prompt_row = [running.base], ROW
    cells.cells[running.base] = set(range(50))
    base, keep, row = kv.place(request(prompt), [running])
    assert base != running.base and keep == 50 and row is ROW
    assert ("cp", running.base, base, -1, -1) in cells.edits
    assert cells.cells[running.base] == set(range(50))  # untouched


def test_room_evicts_oldest_first_and_release_frees_ids() -> None:
    cells = FakeCells(n_seq=3, n_ctx=100)
    kv = KvCache(cells)
    old = finished(kv, cells, [1] * 30, [2] * 10)
    new = finished(kv, cells, [3] * 30, [4] * 10)
    assert kv.cached_cells() == 80
    assert kv.room(1, 30, used=0)  # 80 + 30 > 100: the oldest goes
    assert list(kv.cached) == [new] and old in kv.free and cells.cells[old] == set()
    assert not kv.room(1, 200, used=0) and not kv.cached  # never fits: everything evicted
    assert kv.room(1, 200, used=0, alone=True)  # alone, a budget is only an upper bound
    req = request([9])
    req.held = [kv.take(), kv.take()]
    kv.release(req)
    assert req.held == [] and sorted(kv.free) == [0, 1, 2]


def test_a_request_that_left_during_prefill_keeps_whole_chunks() -> None:
    cells = FakeCells()
    kv = KvCache(cells)
    prompt = list(range(100))
    req = request(prompt)
    req.base = kv.take()
    req.held, req.done = [req.base], PREFILL_CHUNK + 5
    kv.keep_all(req)
    entry = kv.cached[req.base]
    assert entry.tokens == prompt[:PREFILL_CHUNK] and entry.row is None and req.held == []
