"""Continuous batching for the llama.cpp engine: one thread owns the context and every decode
step carries the live sequences of all admitted requests (llama.cpp server's "slots").

- A request (`Request`) asks for `samples` sequences. It is admitted, in arrival order, when
  that many sequence ids are free and its KV budget (prompt + samples x max_tokens) fits
  beside the running ones; a request that does not fit waits, and so does every request
  behind it (no starvation of large requests).
- Admission looks for the cached sequence (left by a finished request) sharing the longest
  prefix with the prompt and takes it over, so only the rest is prefilled (CNTP's drafts and
  trials extend one another's prefixes; a repeated prompt costs nothing). A prompt is
  prefilled in chunks of PREFILL_CHUNK tokens carried in the same decode steps as the others'
  tokens, so a long prompt slows the running requests instead of stopping them.
- Each step samples every live sequence with its own request's parameters and per-sequence
  RNG (sample i of a request seeded seed + i), so a seeded request draws the same samples
  alone or beside others (up to the float rounding of different batch shapes).
- Finished requests leave at once; their sequences stay cached (prefix reuse) until their
  ids or cells are needed. A cancelled request (client gone, deadline) leaves at the next
  step, prefill included.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EngineError
from ..stops import holdback, stop_index
from ..types import (
    ENGINE_WAIT,
    Generation,
    ProgressCallback,
    PromptLogprobs,
    Sample,
    SampleCallback,
    SamplingParams,
)
from .stats import RowStats, sample_rows, score_rows, token_confidence, top_logprobs

if TYPE_CHECKING:
    from .llamacpp import LlamaCppEngine

log = logging.getLogger("ponder.engine")

PREFILL_CHUNK = 64
"""Prompt tokens per step of a prefill. On this project's 2-core CPU a prefill runs at ~130
tokens/s whatever the chunk (64: 124, 128: 131, 256: ~130, 512: ~140 tokens/s), so 64 keeps the
steps of the requests decoding beside a long prompt under ~0.5 s."""
DeltaCallback = Callable[[str], None]


def seed_of(seed: int | None, i: int) -> int | None:
    """Sample i's seed (seed + i), folded into numpy's non-negative range."""
    return None if seed is None else (seed + i) % 2**64


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Seq:
    """Bookkeeping of one sequence being decoded."""

    __slots__ = (
        "conf",
        "conf_window",
        "decoder",
        "emitted",
        "ent",
        "finish",
        "index",
        "kl",
        "lp",
        "lpp",
        "next_entropy",
        "pieces",
        "rng",
        "row",
        "seq",
        "text",
        "tokens",
        "top",
    )

    def __init__(self, rng: np.random.Generator, seq: int, index: int) -> None:
        self.rng = rng
        self.seq = seq
        self.index = index
        self.tokens: list[int] = []
        self.lp: list[float] = []
        self.kl: list[float] = []
        self.lpp: list[float] = []
        self.ent: list[float] = []
        self.conf: list[float] = []
        self.conf_window = 0.0
        self.top: list[list[tuple[str, float]]] = []
        self.pieces: list[str] = []
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.emitted = 0
        self.finish: str | None = None
        self.row: np.ndarray | None = None
        self.next_entropy: float | None = None

    def decoded(self) -> list[int]:
        """Generated tokens whose KV is in the cache (a final sampled token never is)."""
        return self.tokens if self.finish in ("entropy", None) else self.tokens[:-1]

    def end(self, reason: str) -> None:
        self.text += self.decoder.decode(b"", final=True)
        self.finish = reason

    def to_sample(self, with_top: bool) -> Sample:
        return Sample(
            index=self.index,
            text=self.text,
            token_ids=self.tokens,
            finish_reason=self.finish or "cancelled",
            logprob=np.asarray(self.lp, dtype=np.float32),
            kl_uniform=np.asarray(self.kl, dtype=np.float32),
            logprob_processed=np.asarray(self.lpp, dtype=np.float32),
            entropy_processed=np.asarray(self.ent, dtype=np.float32),
            top_logprobs=self.top if with_top else None,
            tokens_text=self.pieces,
            next_entropy=self.next_entropy,
            confidence=np.asarray(self.conf, dtype=np.float32),
        )


@dataclasses.dataclass
class Cached:
    """A finished sequence kept for prefix reuse: its tokens (prompt + decoded), the logits
    row after them, how many are its request's prompt, and whether that prompt's KV is what
    a fresh prefill computes (a request that was not a session's continuation)."""

    tokens: list[int]
    row: np.ndarray | None
    prompt_len: int
    canonical: bool


@dataclasses.dataclass
class Request:
    """One call's samples of one prompt, from submission to its Generation."""

    prompt_ids: list[int]
    params: SamplingParams
    samples: int
    on_progress: ProgressCallback | None = None
    on_delta: DeltaCallback | None = None
    on_sample: SampleCallback | None = None
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    submitted: float = dataclasses.field(default_factory=time.perf_counter)
    admitted: float = 0.0
    seqs: list[Seq] = dataclasses.field(default_factory=list)
    ids: list[int] = dataclasses.field(default_factory=list)
    todo: list[int] = dataclasses.field(default_factory=list)
    """Prompt tokens still to prefill (on ids[0]), from position `done`."""
    done: int = 0
    scores: list[tuple[float, list[tuple[int, float]]]] | None = None
    """The prompt's scores (`params.prompt_logprobs`), filled by the prefill."""
    finished: int = 0
    enough: bool = False
    max_stop: int = 0
    resolve: Callable[[Generation | BaseException], None] | None = None
    on_admitted: Callable[[float], None] | None = None
    """Told (from the batcher thread) how long the request waited for its sequences."""
    prompt_row: np.ndarray | None = None
    """The logits row after the whole prompt (once prefilled): a request with the same prompt
    copies its KV and starts from this row, with nothing to prefill."""
    fresh: bool = True
    """Not a continuation of a session: when it finds the engine idle, it starts from a
    clean KV cache, so a request run alone is computed exactly as it always is (cached
    sequences from other requests would change llama.cpp's attention layout and rounding)."""

    def __post_init__(self) -> None:
        self.max_stop = max((len(x) for x in self.params.stop), default=0)

    @property
    def budget(self) -> int:
        """KV cells it may need: the prompt once (shared by its sequences) + every sample."""
        return len(self.prompt_ids) + self.samples * self.params.max_tokens

    def live(self) -> list[Seq]:
        return [s for s in self.seqs if s.finish is None]

    def prompt_logprobs(self, text: Callable[[int], str]) -> PromptLogprobs | None:
        if self.scores is None:
            return None
        ids = self.prompt_ids
        return PromptLogprobs(
            tokens_text=[text(t) for t in ids],
            logprob=[None] + [lp for lp, _ in self.scores],
            top=[None] + [[(text(t), v) for t, v in top] for _, top in self.scores],
        )


@dataclasses.dataclass
class Counters:
    """What the batcher has done, for /metrics and tests (read without a lock: ints)."""

    steps: int = 0
    sequences: int = 0
    """Sequences summed over steps (occupancy = sequences / steps)."""
    shared_steps: int = 0
    """Steps that carried sequences of two or more requests."""
    generated: int = 0
    prefilled: int = 0
    last_batch: int = 0
    decode_s: float = 0.0
    """Seconds inside llama_decode (the model's own work)."""
    busy_s: float = 0.0
    """Seconds of whole steps (decode + the host's sampling, stats, detokenizing, stops)."""


class Batcher:
    """The scheduler thread and its state; see the module docstring."""

    def __init__(self, eng: LlamaCppEngine) -> None:
        self.eng = eng
        self.n_seq = eng.max_samples
        self.free = list(range(self.n_seq))
        self.cached: collections.OrderedDict[int, Cached] = collections.OrderedDict()
        self.incoming: list[Request] = []
        self.waiting: collections.deque[Request] = collections.deque()
        self.active: list[Request] = []
        self.counters = Counters()
        self._cv = threading.Condition()
        self._stop = False
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

    # ------------------------------------------------------------ the scheduler thread

    def _loop(self) -> None:
        while True:
            with self._cv:
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
                self._tick()
            except Exception as exc:  # a failed decode: every running request fails, state reset
                log.exception("llama.cpp step failed")
                err = exc if isinstance(exc, EngineError) else EngineError(str(exc))
                for req in self.active:
                    self._fail(req, err)
                self.active = []
                self._reset()

    def _tick(self) -> None:
        started = time.perf_counter()
        self._step()
        self.counters.busy_s += time.perf_counter() - started

    def _step(self) -> None:
        self._drop_cancelled()
        self._admit()
        for req in self.active:
            if not req.todo and req.seqs:
                self._sample(req)
        for req in [r for r in self.active if r.seqs and (r.enough or not r.live())]:
            self._finish(req)
        rows: list[tuple[int, int, int]] = []
        owners: list[tuple[Request, Seq]] = []
        for req in self.active:
            for s in req.live():
                rows.append((s.tokens[-1], len(req.prompt_ids) + len(s.tokens) - 1, s.seq))
                owners.append((req, s))
        filling = next((r for r in self.active if r.todo), None)
        if not rows and filling is None:
            return
        logits = self._decode(rows, filling)
        for k, (_, s) in enumerate(owners):
            s.row = logits[k]
        c = self.counters
        c.steps += 1
        c.sequences += len(rows)
        c.last_batch = len(rows)
        c.shared_steps += len({id(r) for r, _ in owners}) > 1

    def _drop_cancelled(self) -> None:
        for req in [r for r in self.waiting if r.cancel.is_set()]:
            self.waiting.remove(req)
            self._fail(req, EngineError("cancelled"))
        for req in [r for r in self.active if r.cancel.is_set()]:
            self.active.remove(req)
            self._keep(req)
            self._fail(req, EngineError("cancelled"))

    def _admit(self) -> None:
        """Admit waiting requests in arrival order while sequences and KV cells allow."""
        while self.waiting:
            req = self.waiting[0]
            used = sum(r.budget for r in self.active)
            fits_alone = not self.active
            while (
                len(self.free) < req.samples
                or used + req.budget + self._cached_cells() > self.eng.n_ctx
            ) and self.cached:
                self._evict()
            if len(self.free) < req.samples:
                return
            if not fits_alone and used + req.budget > self.eng.n_ctx:
                return
            self.waiting.popleft()
            if fits_alone and req.fresh:
                self._reset()
            try:
                self._start(req)
            except Exception as exc:
                for s in req.ids:
                    self.eng._ctx.kv_cache_seq_rm(s, -1, -1)
                    self.free.append(s)
                self._fail(req, exc if isinstance(exc, EngineError) else EngineError(str(exc)))
                continue
            self.active.append(req)

    def _cached_cells(self) -> int:
        return sum(len(c.tokens) for c in self.cached.values())

    def _evict(self) -> None:
        seq, _ = self.cached.popitem(last=False)
        self.eng._ctx.kv_cache_seq_rm(seq, -1, -1)
        self.free.append(seq)

    def _start(self, req: Request) -> None:
        """Give the request its sequences, its prompt's KV reused where another sequence has
        it (`_reuse`); only the rest is prefilled."""
        req.admitted = time.perf_counter()
        if req.on_admitted is not None:
            req.on_admitted(req.admitted - req.submitted)
        prompt = req.prompt_ids
        base, keep, row = -1, 0, None
        if req.params.prompt_logprobs is None:
            base, keep, row = self._reuse(req)
        if base < 0:
            base = self.free.pop(0)
            self.eng._ctx.kv_cache_seq_rm(base, -1, -1)
        req.ids = [base] + [self.free.pop(0) for _ in range(req.samples - 1)]
        if row is not None:
            req.prompt_row = row
            self._fan_out(req, row)
            return
        req.todo, req.done = prompt[keep:], keep
        if req.params.prompt_logprobs is not None:
            req.scores = []

    def _reuse(self, req: Request) -> tuple[int, int, np.ndarray | None]:
        """(first sequence, prompt tokens already there, the prompt's last logits row if the
        whole prompt is there) from the sequence sharing the longest prefix with the prompt:
        a cached one is taken over, a running request's is copied (cells are shared).

        A session's later calls reuse all they can (their own history, as before). Any other
        request reuses only what a fresh prefill would have computed identically: a whole
        prompt with its stored last row, or whole 64-token chunks (prefills are chunked from
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
                c = (
                    c
                    if exact
                    else min(c, entry.prompt_len) - min(c, entry.prompt_len) % PREFILL_CHUNK
                )
            row = entry.row if exact else None
            best = max(best, (c, exact, "cached", seq, row), key=_rank)
        for other in self.active:
            if other.prompt_row is None or not other.ids or not (other.fresh or not req.fresh):
                continue
            c = common_prefix(other.prompt_ids, prompt)
            exact = c == len(prompt) == len(other.prompt_ids)
            usable = c if exact else c - c % PREFILL_CHUNK
            row = other.prompt_row if exact else None
            best = max(best, (usable, exact, "active", other.ids[0], row), key=_rank)
        usable, exact, kind, seq, row = best
        if usable <= 0:
            return -1, 0, None
        ctx = self.eng._ctx
        if kind == "cached":
            self.cached.pop(seq)
            base = seq
        else:
            base = self.free.pop(0)
            ctx.kv_cache_seq_rm(base, -1, -1)
            ctx.kv_cache_seq_cp(seq, base, -1, -1)
        if exact:
            ctx.kv_cache_seq_rm(base, len(prompt), -1)
            return base, len(prompt), row
        keep = min(usable, len(prompt) - 1)
        if req.fresh:
            keep -= keep % PREFILL_CHUNK  # the prefill goes on in whole, aligned chunks
        ctx.kv_cache_seq_rm(base, keep, -1)
        return base, keep, None

    def _fan_out(self, req: Request, row: np.ndarray) -> None:
        """The prompt is on ids[0]: share it with the other sequences; first rows = `row`."""
        for i, seq in enumerate(req.ids):
            if i:
                self.eng._ctx.kv_cache_seq_rm(seq, -1, -1)
                self.eng._ctx.kv_cache_seq_cp(req.ids[0], seq, -1, -1)
            s = Seq(np.random.default_rng(seed_of(req.params.seed, i)), seq, i)
            s.row = row
            req.seqs.append(s)

    def _decode(self, rows: list[tuple[int, int, int]], filling: Request | None) -> np.ndarray:
        """Every live sequence's last token in one llama_decode, then (when a prompt is being
        prefilled) its next chunk in a call of its own: a 64-token chunk in the same call
        makes llama.cpp round its neighbours' logits differently (measured: a seeded request's
        samples changed), so a request's samples would depend on what else is running.
        Returns the decode rows' logits; the chunk's are scored or, when it ends the prompt,
        start the request."""
        decoded = np.zeros((0, self.eng.n_vocab), np.float32)
        if rows:
            decoded = self._call([(t, p, s, True) for t, p, s in rows]).copy()
        if filling is not None:
            chunk = filling.todo[:PREFILL_CHUNK]
            last = len(chunk) == len(filling.todo)
            scoring = filling.scores is not None
            seq, at = filling.ids[0], filling.done
            out = self._call(
                [
                    (tok, at + r, seq, scoring or (last and r == len(chunk) - 1))
                    for r, tok in enumerate(chunk)
                ]
            )
            self._filled(filling, chunk, out, last)
        return decoded

    def _call(self, rows: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """One llama_decode of (token, position, sequence, wants logits) rows: the logits rows
        asked for (a view into llama.cpp's buffer, valid until the next call)."""
        eng = self.eng
        b = eng._batch.batch
        for n, (tok, pos, seq, want) in enumerate(rows):
            b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = tok, pos, 1, want
            b.seq_id[n][0] = seq
        b.n_tokens = len(rows)
        started = time.perf_counter()
        code = eng._lib.llama_decode(eng._ctx.ctx, b)
        self.counters.decode_s += time.perf_counter() - started
        if code == 1:
            raise EngineError("the KV cache is full: lower samples or max_tokens")
        if code != 0:
            raise EngineError(f"llama_decode failed with code {code}")
        outputs = sum(want for *_, want in rows)
        if outputs == 0:
            return np.zeros((0, eng.n_vocab), np.float32)
        ptr = eng._lib.llama_get_logits(eng._ctx.ctx)
        return np.ctypeslib.as_array(ptr, shape=(outputs, eng.n_vocab))

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
            self._fan_out(req, req.prompt_row)

    # ------------------------------------------------------------ sampling

    def _sample(self, req: Request) -> None:
        """Sample one token for each of the request's live sequences (they all have a row)."""
        live = req.live()
        if not live:
            return
        params = req.params
        logits = np.stack([s.row for s in live])  # type: ignore[misc]
        st = sample_rows(logits, params, [s.rng for s in live])
        conf = (
            token_confidence(logits, st.lse, params.confidence_top_k)
            if params.confidence_top_k > 0
            else None
        )
        eng = self.eng
        for q, s in enumerate(live):
            ent = float(st.entropy_processed[q])
            if params.stop_entropy is not None and ent >= params.stop_entropy:
                s.finish, s.next_entropy = "entropy", ent  # stop before this token
            else:
                eog = eng._is_eog(eng._vocab, int(st.token[q]))
                self._accept(s, st, q, params, req.max_stop, eog)
                self.counters.generated += 1
                if conf is not None:
                    confident(s, float(conf[q]), params)
            if req.on_delta is not None:
                hold = 0 if s.finish else holdback(s.text, params.stop)
                if len(s.text) - hold > s.emitted:
                    req.on_delta(s.text[s.emitted : len(s.text) - hold])
                    s.emitted = len(s.text) - hold
            if s.finish is not None:
                req.finished += 1
                if req.on_progress is not None:
                    req.on_progress(req.finished, req.samples)
                if req.on_sample is not None and not req.enough:
                    req.enough = bool(req.on_sample(s.to_sample(params.top_logprobs > 0)))
        if req.enough:
            for s in req.live():  # their last sampled token was never decoded
                s.end("cancelled")

    def _accept(
        self, s: Seq, st: RowStats, r: int, params: SamplingParams, max_stop: int, eog: bool
    ) -> None:
        """Append row r's sampled token to sequence s and decide whether s is finished."""
        eng = self.eng
        tok = int(st.token[r])
        s.tokens.append(tok)
        s.lp.append(float(st.logprob[r]))
        s.kl.append(float(st.kl_uniform[r]))
        s.lpp.append(float(st.logprob_processed[r]))
        s.ent.append(float(st.entropy_processed[r]))
        if params.top_logprobs > 0:
            assert s.row is not None
            top = top_logprobs(s.row, float(st.lse[r]), params.top_logprobs)
            s.top.append([(eng._text(t), lp) for t, lp in top])
        if eog:
            s.pieces.append("")
            s.end("stop")
            return
        s.pieces.append(eng._text(tok))
        before = len(s.text)
        s.text += s.decoder.decode(eng._piece(tok))
        if params.stop:
            cut = stop_index(s.text, params.stop, max(0, before - max_stop + 1))
            if cut != -1:
                s.text = s.text[:cut]
                s.finish = "stop"
                return
        if params.punct_stop and tok in eng._punct:
            s.end("punct")
        elif len(s.tokens) >= params.max_tokens:
            s.end("length")

    # ------------------------------------------------------------ leaving

    def _keep(self, req: Request) -> None:
        """A leaving request's sequences stay cached (prefix reuse), rather than freed: freed
        cells in the middle of the cache would be refilled by the running requests' next
        tokens, out of position order, and llama.cpp's attention would then round their
        logits differently (their seeded samples would change because another one left)."""
        n = len(req.prompt_ids)
        for s in req.seqs:
            self.cached[s.seq] = Cached(req.prompt_ids + s.decoded(), s.row, n, req.fresh)
            self.cached.move_to_end(s.seq)
        if not req.seqs and req.ids:  # left during its prefill: the prompt so far
            done = req.done - req.done % PREFILL_CHUNK  # whole chunks only
            self.cached[req.ids[0]] = Cached(req.prompt_ids[:done], None, done, req.fresh)
            self.free += req.ids[1:]

    def _finish(self, req: Request) -> None:
        """The request's Generation; its sequences stay cached for prefix reuse."""
        self.active.remove(req)
        self._keep(req)
        with_top = req.params.top_logprobs > 0
        now = time.perf_counter()
        gen = Generation(
            samples=[s.to_sample(with_top) for s in req.seqs],
            prompt_tokens=len(req.prompt_ids),
            queue_s=req.admitted - req.submitted,
            generate_s=now - req.admitted,
            prompt_logprobs=req.prompt_logprobs(partial(self.eng._text, special=True)),
        )
        if req.resolve is not None:
            req.resolve(gen)

    def _fail(self, req: Request, exc: BaseException) -> None:
        if req.resolve is not None:
            req.resolve(exc)

    def _reset(self) -> None:
        """After a failed step: an empty cache and every id free."""
        self.eng._ctx.kv_cache_clear()
        self.cached.clear()
        self.free = list(range(self.n_seq))


def _rank(c: tuple[int, bool, str, int, np.ndarray | None]) -> tuple[int, int, int]:
    """Order of reuse candidates: more tokens, then a whole prompt, then a cached sequence."""
    return c[0], int(c[1]), int(c[2] == "cached")


def confident(s: Seq, c: float, params: SamplingParams) -> None:
    """Record a token's DeepConf confidence; finish the sequence when the mean of its last
    `window` confidences falls below the threshold (`SamplingParams.stop_confidence`)."""
    s.conf.append(c)
    if params.stop_confidence is None:
        return
    window, threshold = params.stop_confidence
    s.conf_window += c
    if len(s.conf) > window:
        s.conf_window -= s.conf[-window - 1]
    if s.finish is None and len(s.conf) >= window and s.conf_window < threshold * window:
        s.end("confidence")
