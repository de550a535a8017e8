"""The llama.cpp context's sequence ids and KV cells, as the batcher sees them (`KvCache`):
which ids are free, which hold a finished sequence kept for prefix reuse, and where a new
request's prompt is placed (`place`, the one placement rule). Pure bookkeeping over a narrow
`Cells` adapter (remove / copy a sequence's cells, clear): unit-tested with a fake."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .schedule import FA_QUERY_TILE
from .sequences import Cached, Request, Seq, common_prefix

PREFILL_CHUNK = FA_QUERY_TILE // 2
"""Prompt tokens per prefill call: below FA_QUERY_TILE (schedule.py), so a prompt's KV is the
same wherever its cells are. On this project's 2-core CPU a prefill runs at ~120 tokens/s
whatever the chunk, so a chunk keeps the steps of the requests decoding beside a long prompt
short."""


class Cells(Protocol):
    """What the cache does to the context: llama.cpp's memory calls."""

    n_ctx: int
    n_seq: int

    def seq_rm(self, seq: int, p0: int, p1: int) -> None: ...

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None: ...

    def clear(self) -> None: ...


Placement = tuple[int, int, "np.ndarray | None"]
"""(base sequence or -1, prompt tokens already in it, the prompt's last logits row when the
whole prompt is there)."""


class KvCache:
    """Free ids, and finished sequences kept (oldest first) until their id or cells are needed:
    freed cells in the middle of the cache would be refilled by the running requests' next
    tokens, out of position order, and their attention would then sum in another order."""

    def __init__(self, cells: Cells) -> None:
        self.cells = cells
        self.free = list(range(cells.n_seq))
        self.cached: collections.OrderedDict[int, Cached] = collections.OrderedDict()

    def cached_cells(self) -> int:
        return sum(len(c.tokens) for c in self.cached.values())

    def room(self, ids: int, cells: int, used: int, alone: bool = False) -> bool:
        """Whether `ids` sequence ids and `cells` more KV cells (beyond the `used` ones) can
        be had now, evicting cached sequences oldest first; a request alone may exceed the
        cells (its budget is an upper bound)."""
        n_ctx = self.cells.n_ctx
        while (len(self.free) < ids or used + cells + self.cached_cells() > n_ctx) and self.cached:
            self.evict()
        if len(self.free) < ids:
            return False
        return alone or used + cells <= n_ctx

    def evict(self) -> None:
        seq, _ = self.cached.popitem(last=False)
        self.cells.seq_rm(seq, -1, -1)
        self.free.append(seq)

    def take(self) -> int:
        """A free id, its cells emptied."""
        seq = self.free.pop(0)
        self.cells.seq_rm(seq, -1, -1)
        return seq

    def fork(self, src: int, n: int) -> int:
        """A free id sharing `src`'s first n cells (a request's next sample on its prompt)."""
        seq = self.take()
        self.cells.seq_cp(src, seq, 0, n)
        return seq

    def place(self, req: Request, active: Sequence[Request]) -> Placement:
        """Where a new request's prompt goes: the sequence sharing the longest usable prefix
        with it; a cached one is taken over, a running request's is copied (cells are shared).
        (-1, 0, None): nowhere, prefill it all on a fresh id.

        A session's later calls reuse all they can (their own history). Any other request
        reuses only what a fresh prefill would have computed identically: a whole prompt
        with its stored last row, or whole PREFILL_CHUNK chunks (prefills are chunked from
        position 0), so its samples do not depend on what ran before or beside it."""
        prompt = req.prompt_ids
        best: tuple[int, bool, str, int, np.ndarray | None] = (0, False, "", -1, None)
        for seq, entry in self.cached.items():
            c = common_prefix(entry.tokens, prompt)
            exact = c == len(prompt) == len(entry.tokens) and entry.row is not None
            if req.fresh:  # only what a fresh prefill computes identically
                if not entry.canonical:
                    continue
                exact = exact and len(entry.tokens) == entry.prompt_len
                if not exact:
                    c = min(c, entry.prompt_len) - min(c, entry.prompt_len) % PREFILL_CHUNK
            row = entry.row if exact else None
            best = max(best, (c, exact, "cached", seq, row), key=_rank)
        for other in active:
            if other.prompt_row is None or other.base < 0 or not (other.fresh or not req.fresh):
                continue
            c = common_prefix(other.prompt_ids, prompt)
            exact = c == len(prompt) == len(other.prompt_ids)
            usable = c if exact else c - c % PREFILL_CHUNK
            row = other.prompt_row if exact else None
            best = max(best, (usable, exact, "active", other.base, row), key=_rank)
        usable, exact, kind, seq, row = best
        if usable <= 0:
            return -1, 0, None
        if kind == "cached":
            self.cached.pop(seq)
            base = seq
        else:
            base = self.take()
            self.cells.seq_cp(seq, base, -1, -1)
        if exact:
            self.cells.seq_rm(base, len(prompt), -1)
            return base, len(prompt), row
        keep = min(usable, len(prompt) - 1)
        if req.fresh:
            keep -= keep % PREFILL_CHUNK  # the prefill goes on in whole, aligned chunks
        self.cells.seq_rm(base, keep, -1)
        return base, keep, None

    def keep(self, seq: int, req: Request, s: Seq | None) -> None:
        """Keep a sequence of `req` for prefix reuse: with its sample's tokens, or (s None) the
        prompt's whole chunks prefilled so far."""
        n = len(req.prompt_ids)
        if s is None:
            done = req.done - req.done % PREFILL_CHUNK
            self.cached[seq] = Cached(req.prompt_ids[:done], None, done, req.fresh)
        else:
            self.cached[seq] = Cached(req.prompt_ids + s.decoded(), s.row, n, req.fresh)
        self.cached.move_to_end(seq)

    def keep_all(self, req: Request) -> None:
        """A leaving request's sequences stay cached."""
        by_seq = {s.seq: s for s in req.seqs}
        for seq in req.held:
            s = by_seq.get(seq)
            if s is None and req.prompt_row is not None:  # a base whose sample never started
                self.cached[seq] = Cached(
                    list(req.prompt_ids), req.prompt_row, len(req.prompt_ids), req.fresh
                )
                self.cached.move_to_end(seq)
            else:
                self.keep(seq, req, s)
        req.held = []

    def release(self, req: Request) -> None:
        """Ids of a request that failed to start: back to the pool, cells removed."""
        for seq in req.held:
            self.cells.seq_rm(seq, -1, -1)
            self.free.append(seq)
        req.held = []

    def reset(self) -> None:
        """An empty cache and every id free (the engine idle, or after a failed step)."""
        self.cells.clear()
        self.cached.clear()
        self.free = list(range(self.cells.n_seq))


def _rank(c: tuple[int, bool, str, int, np.ndarray | None]) -> tuple[int, int, int]:
    """Order of reuse candidates: more tokens, then a whole prompt, then a cached sequence."""
    return c[0], int(c[1]), int(c[2] == "cached")
