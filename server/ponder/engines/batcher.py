"""Continuous batching for the llama.cpp engine: one thread owns the context and every decode
step carries the live sequences of all admitted requests (llama.cpp server's "slots").

A request (`Request`) asks for `samples` sequences of one prompt. Its phases:
waiting -> prefilling -> decoding -> finished (`Request.phase`).

- **Admission and fairness** (`Batcher._admit`, `_grow`, `share`): requests are admitted in
  arrival order as soon as one sequence id and the KV cells of their prompt and first sample
  are free. A request's samples start in parts: it runs at most `share` of them at a time,
  where `share` is the engine's `max_samples` divided among the requests present (running
  or waiting), and it decodes at most `share` rows per step (the rest of its live samples
  wait their turn, round robin). The context has `spare` sequence ids beyond `max_samples`,
  so a request that took every sample's id while alone still leaves room for the next one:
  a short request never waits for a long one to finish.
- **Prefix cache** (`kvcache.KvCache`: `place`, `keep`, `evict`): a finished sequence stays
  cached (its ids and cells) until its id or cells are needed; a new request takes over the
  cached or running sequence sharing the longest prefix with its prompt and prefills only the
  rest.
- **Steps** (`_step`, `_decode`): sample every live sequence that has a logits row, then one
  llama_decode of the pending tokens (at most DECODE_ROWS rows a call) and, when a prompt is
  being prefilled, its next PREFILL_CHUNK tokens in a call of their own.
- **Reproducibility**: each sequence has its own RNG (sample i of a request seeded seed + i),
  and no llama_decode call carries 64 or more rows: llama.cpp's CPU flash attention switches
  to a tiled kernel at 64 query rows, whose rounding depends on where a sequence's cells sit
  in the shared cache. Below it, attention for a row reads only its own sequence's cells in
  order, so a seeded request draws the same samples alone or beside others (docs/engines.md,
  "Reproducibility", says where this stops).
- **Grading off this thread**: a finished sample is handed to `on_sample` (adaptive stopping
  grades it: regex, math-verify) in the grader pool, never on this thread; its verdict ends
  the request's running samples at a later step, and an exception in it fails that request
  only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import EngineError
from ..types import (
    ENGINE_WAIT,
    Generation,
    Sample,
)
from .context import Counters, Model
from .grammar import allowed as grammar_allowed
from .kvcache import PREFILL_CHUNK, KvCache
from .schedule import DECODE_ROWS, FA_QUERY_TILE, StepCost, quotas
from .sequences import Cached, Request, Seq, StepPlan, accept, confident, seed_of
from .stats import sample_rows, score_rows, token_confidence

__all__ = [
    "DECODE_ROWS",
    "FA_QUERY_TILE",
    "PREFILL_CHUNK",
    "Batcher",
    "Cached",
    "Counters",
    "Model",
    "Request",
    "Seq",
    "StepCost",
    "quotas",
]

log = logging.getLogger("ponder.engine")

GRADERS = 2
"""Threads that run `on_sample` (adaptive stopping's grading) for every request."""
IDLE_WAIT_S = 0.05


class Batcher:
    """The scheduler thread and its state; see the module docstring."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.kv = KvCache(model)
        self.incoming: list[Request] = []
        self.waiting: collections.deque[Request] = collections.deque()
        self.active: list[Request] = []
        self.counters = Counters()
        self.cost = StepCost()
        self._cv = threading.Condition()
        self._stop = False
        self._graders = ThreadPoolExecutor(GRADERS, thread_name_prefix="ponder-grade")
        self._thread = threading.Thread(target=self._loop, name="llama.cpp", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ from the event loop

    async def run(self, req: Request) -> Generation:
        """Submit a request and wait for its Generation; cancelling the caller cancels it."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Generation] = loop.create_future()

        def settle(result: Generation | BaseException) -> None:
            if fut.done():
                return
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

        def resolve(result: Generation | BaseException) -> None:
            loop.call_soon_threadsafe(settle, result)

        req.resolve = resolve
        report = ENGINE_WAIT.get()
        if report is not None:
            tell = report

            def admitted(seconds: float) -> None:
                loop.call_soon_threadsafe(tell, seconds)

            req.on_admitted = admitted
        with self._cv:
            self.incoming.append(req)
            self._cv.notify()
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            req.cancel.set()
            with self._cv:
                self._cv.notify()
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join()
        self._graders.shutdown(wait=False, cancel_futures=True)

    @property
    def in_flight(self) -> int:
        with self._cv:
            return len(self.incoming) + len(self.waiting) + len(self.active)

    @property
    def queued(self) -> int:
        with self._cv:
            return len(self.incoming) + len(self.waiting)

    # ------------------------------------------------------------ the scheduler thread

    def _loop(self) -> None:
        idle = False
        while True:
            with self._cv:
                if idle and not (self.incoming or self._stop):
                    # Requests wait on their grading (or on ids): a verdict, a new request or
                    # a cancellation notifies; the timeout re-checks the rest.
                    self._cv.wait(timeout=IDLE_WAIT_S)
                while not (self.incoming or self.active or self.waiting or self._stop):
                    self._cv.wait()
                if self._stop:
                    doomed = self.incoming + list(self.waiting) + self.active
                    self.incoming, self.active = [], []
                    self.waiting.clear()
                    for req in doomed:
                        self._fail(req, EngineError("the engine is shutting down"))
                    return
                self.waiting.extend(self.incoming)
                self.incoming = []
            try:
                started = time.perf_counter()
                idle = not self._step()
                if not idle:
                    self.counters.busy_s += time.perf_counter() - started
            except Exception as exc:  # a failed decode: every running request fails, state reset
                log.exception("llama.cpp step failed")
                err = exc if isinstance(exc, EngineError) else EngineError(str(exc))
                for req in self.active:
                    self._fail(req, err)
                self.active = []
                self.kv.reset()
                idle = False

    def _step(self) -> bool:
        """One step; False when there was nothing to do (requests wait on their grading)."""
        self._drop_cancelled()
        self._admit()
        for req in self.active:
            if req.prompt_row is not None:
                self._grow(req)
                self._sample(req)
        for req in [r for r in self.active if self._leaving(r)]:
            self._finish(req)
        plan = self._plan()
        if plan.empty:
            return False
        self._execute(plan)
        return True

    def _plan(self) -> StepPlan:
        """This step's decode rows (`_rows`) and the prompt being prefilled (the first
        admitted request still prefilling: one at a time, in arrival order)."""
        rows, owners = self._rows()
        return StepPlan(rows, owners, next((r for r in self.active if r.todo), None))

    def _execute(self, plan: StepPlan) -> None:
        """Run a plan through the model: each row's logits go to its sequence."""
        logits = self._decode(plan.rows, plan.filling)
        for k, (_, s) in enumerate(plan.owners):
            s.row = logits[k]
        c = self.counters
        c.steps += 1
        c.sequences += len(plan.rows)
        c.last_batch = len(plan.rows)
        c.shared_steps += len({id(r) for r, _ in plan.owners}) > 1

    def share(self) -> int:
        """Samples one request may run (and rows it may decode per step) while the others
        present get theirs: max_samples divided among the requests running or waiting."""
        present = len(self.active) + len(self.waiting)
        return max(1, self.model.max_samples // max(present, 1))

    def _rows(self) -> tuple[list[tuple[int, int, int]], list[tuple[Request, Seq]]]:
        """The (token, position, sequence) rows of this step: each request's live samples
        whose last token waits, at most `share` of them; while several requests decode,
        their rows are also cut to what keeps the step within LATENCY_FACTOR of the smallest
        one's own step (`quotas`). A request with more rows than its quota takes turns."""
        share = self.share()
        ready = {
            id(r): [s for s in r.seqs if s.finish is None and s.row is None] for r in self.active
        }
        demand = {k: min(len(v), share) for k, v in ready.items() if v}
        quota = quotas(demand, self.cost)
        rows: list[tuple[int, int, int]] = []
        owners: list[tuple[Request, Seq]] = []
        for req in self.active:
            mine, take = ready[id(req)], quota.get(id(req), 0)
            if len(mine) > take:
                self.counters.deferred += len(mine) - take
                start = req.turn % len(mine)
                mine = (mine[start:] + mine[:start])[:take]
                req.turn += take
            n = len(req.prompt_ids)
            for s in sorted(mine, key=lambda s: s.index):
                rows.append((s.tokens[-1], n + len(s.tokens) - 1, s.seq))
                owners.append((req, s))
        return rows, owners

    def _leaving(self, req: Request) -> bool:
        if req.failed is not None:
            return True
        if req.prompt_row is None or req.grading:
            return False
        return not req.live() and (req.enough or not req.pending)

    def _drop_cancelled(self) -> None:
        for req in [r for r in self.waiting if r.cancel.is_set()]:
            self.waiting.remove(req)
            self._fail(req, EngineError("cancelled"))
        for req in [r for r in self.active if r.cancel.is_set()]:
            self.active.remove(req)
            self.kv.keep_all(req)
            self._fail(req, EngineError("cancelled"))

    def _admit(self) -> None:
        """Admit waiting requests in arrival order while a sequence id and the KV cells of
        their prompt and first sample are free (the rest of their samples start in parts)."""
        while self.waiting:
            req = self.waiting[0]
            alone = not self.active
            need = len(req.prompt_ids) + req.params.max_tokens
            if not self.kv.room(1, need, self._used(), alone):
                return
            self.waiting.popleft()
            if alone and req.fresh:
                self.kv.reset()
            try:
                self._start(req)
            except Exception as exc:
                self.kv.release(req)
                self._fail(req, exc if isinstance(exc, EngineError) else EngineError(str(exc)))
                continue
            self.active.append(req)

    def _used(self) -> int:
        return sum(r.budget for r in self.active)

    def _start(self, req: Request) -> None:
        """Give the request its base sequence, its prompt's KV reused where another sequence
        has it (`KvCache.place`); only the rest is prefilled."""
        req.admitted = time.perf_counter()
        if req.on_admitted is not None:
            req.on_admitted(req.admitted - req.submitted)
        base, keep, row = -1, 0, None
        if req.params.prompt_logprobs is None:
            base, keep, row = self.kv.place(req, self.active)
        if base < 0:
            base = self.kv.take()
        req.base, req.held = base, [base]
        if row is not None:
            req.prompt_row = row
            req.prefilled = time.perf_counter()
            return
        req.todo, req.done = req.prompt_ids[keep:], keep
        if req.params.prompt_logprobs is not None:
            req.scores = []

    def _grow(self, req: Request) -> None:
        """Start the request's next samples while it runs fewer than its share and an id and
        their KV cells are free: sample 0 on the base sequence, the others on new ids sharing
        the prompt's cells. Every sample starts from the prompt's logits row."""
        assert req.prompt_row is not None
        share = self.share()
        n = len(req.prompt_ids)
        while req.pending and len(req.live()) < share:
            i = len(req.seqs)
            if i == 0:
                seq = req.base
            elif self.kv.room(1, req.params.max_tokens, self._used()):
                seq = self.kv.fork(req.base, n)
                req.held.append(seq)
            elif not req.live() and self._base_done(req):
                # No id to be had and nothing of its own running: its base goes on with the
                # next sample (its finished sample's cells are dropped), so requests that
                # hold every id still progress.
                seq = req.base
                self.model.seq_rm(seq, n, -1)
            else:
                return
            s = Seq(np.random.default_rng(seed_of(req.params.seed, i)), seq, i, req.params.stop)
            if req.matchers is not None:
                s.matcher = req.matchers[i]
            s.row = req.prompt_row
            req.seqs.append(s)

    @staticmethod
    def _base_done(req: Request) -> bool:
        on_base = [s for s in req.seqs if s.seq == req.base]
        return bool(on_base) and on_base[-1].finish is not None

    def _decode(self, rows: list[tuple[int, int, int]], filling: Request | None) -> np.ndarray:
        """Every pending token in llama_decode calls of at most DECODE_ROWS rows, then (when a
        prompt is being prefilled) its next chunk in a call of its own (see FA_QUERY_TILE).
        Returns the decode rows' logits; the chunk's are scored or, when it ends the prompt,
        become the request's prompt row."""
        decoded = np.zeros((0, self.model.n_vocab), np.float32)
        if rows:
            calls = -(-len(rows) // DECODE_ROWS)
            size = -(-len(rows) // calls)  # balanced: 64 rows are two calls of 32
            parts = []
            for k in range(0, len(rows), size):
                part = rows[k : k + size]
                started = time.perf_counter()
                parts.append(self._call([(t, p, s, True) for t, p, s in part]).copy())
                self.cost.observe(len(part), time.perf_counter() - started)
            decoded = np.concatenate(parts)
        if filling is not None:
            chunk = filling.todo[:PREFILL_CHUNK]
            last = len(chunk) == len(filling.todo)
            scoring = filling.scores is not None
            seq, at = filling.base, filling.done
            out = self._call(
                [
                    (tok, at + r, seq, scoring or (last and r == len(chunk) - 1))
                    for r, tok in enumerate(chunk)
                ]
            )
            self._filled(filling, chunk, out, last)
        return decoded

    def _call(self, rows: list[tuple[int, int, int, bool]]) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self.model.decode(rows)
        finally:
            self.counters.decode_s += time.perf_counter() - started

    def _filled(self, req: Request, chunk: list[int], rows: np.ndarray, last: bool) -> None:
        k = req.params.prompt_logprobs
        if req.scores is not None and k is not None:
            nxt = req.prompt_ids[req.done + 1 : req.done + 1 + len(chunk)]
            req.scores += score_rows(rows, nxt, k)
        req.done += len(chunk)
        req.todo = req.todo[len(chunk) :]
        self.counters.prefilled += len(chunk)
        if last:
            req.prompt_row = rows[-1].copy()
            req.prefilled = time.perf_counter()

    # ------------------------------------------------------------ sampling

    def _sample(self, req: Request) -> None:
        """Sample one token for each of the request's live sequences that has a row."""
        if req.enough:
            for s in req.live():
                s.row = None  # the cache keeps what it is sure is decoded
                s.end("cancelled")
                self._done(req, s)
            return
        live = [s for s in req.live() if s.row is not None]
        if not live:
            return
        params = req.params
        model = self.model
        logits = np.stack([s.row for s in live])  # type: ignore[misc]
        short = np.array([len(s.tokens) < params.min_tokens for s in live])
        banned = (short, model.eog) if params.min_tokens else None
        st = sample_rows(logits, params, [s.rng for s in live], banned, self._allowed(live))
        conf = (
            token_confidence(logits, st.lse, params.confidence_top_k)
            if params.confidence_top_k > 0
            else None
        )
        for q, s in enumerate(live):
            ent = float(st.entropy_processed[q])
            if params.stop_entropy is not None and ent >= params.stop_entropy:
                s.finish, s.next_entropy = "entropy", ent  # stop before this token
            else:
                accept(model, s, st, q, params, model.is_eog(int(st.token[q])))
                self.counters.generated += 1
                if conf is not None:
                    confident(s, float(conf[q]), params)
            s.row = None
            if req.on_delta is not None:
                hold = 0 if s.finish or s.stops is None else s.stops.holdback
                if len(s.text) - hold > s.emitted:
                    req.on_delta(s.text[s.emitted : len(s.text) - hold])
                    s.emitted = len(s.text) - hold
            if s.finish is not None:
                req.finished += 1
                if req.on_progress is not None:
                    req.on_progress(req.finished, req.samples)
                if req.on_sample is not None:
                    self._grade(req, s.to_sample(params.top_logprobs > 0))
                self._done(req, s)

    def _allowed(self, live: list[Seq]) -> np.ndarray | None:
        """The grammar masks of these rows (structured output), None when none has one."""
        if all(s.matcher is None for s in live):
            return None
        started = time.perf_counter()
        n = self.model.n_vocab
        allowed = np.ones((len(live), n), dtype=bool)
        for q, s in enumerate(live):
            if s.matcher is not None:
                allowed[q] = grammar_allowed(s.matcher, n)
        self.counters.grammar_s += time.perf_counter() - started
        return allowed

    def _grade(self, req: Request, sample: Sample) -> None:
        """`on_sample` in the grader pool; its verdict is read at a later step."""
        on_sample = req.on_sample
        assert on_sample is not None
        with self._cv:
            req.grading += 1

        def grade() -> None:
            try:
                if not req.enough and req.failed is None and on_sample(sample):
                    req.enough = True
            except Exception as exc:
                log.exception("grading a finished sample failed")
                req.failed = exc
            finally:
                with self._cv:
                    req.grading -= 1
                    self._cv.notify()

        self._graders.submit(grade)

    def _done(self, req: Request, s: Seq) -> None:
        """A finished sample's id goes back to the pool (its cells stay cached), unless it is
        the base, which holds the prompt for the request's later samples."""
        if s.seq != req.base and s.seq in req.held:
            req.held.remove(s.seq)
            self.kv.keep(s.seq, req, s)

    # ------------------------------------------------------------ leaving

    def _finish(self, req: Request) -> None:
        """The request's Generation (or its grading's error); its sequences stay cached."""
        self.active.remove(req)
        self.kv.keep_all(req)
        if req.failed is not None:
            self._fail(req, req.failed)
            return
        with_top = req.params.top_logprobs > 0
        now = time.perf_counter()
        gen = Generation(
            samples=[s.to_sample(with_top) for s in req.seqs],
            prompt_tokens=len(req.prompt_ids),
            queue_s=req.admitted - req.submitted,
            generate_s=now - req.admitted,
            prefill_s=max(req.prefilled - req.admitted, 0.0) if req.prefilled else 0.0,
            prompt_logprobs=req.prompt_logprobs(lambda t: self.model.text(t, special=True)),
        )
        req.ended = True
        if req.resolve is not None:
            req.resolve(gen)

    def _fail(self, req: Request, exc: BaseException) -> None:
        req.ended = True
        if req.resolve is not None:
            req.resolve(exc)
