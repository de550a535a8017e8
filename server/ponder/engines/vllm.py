"""The GPU engine: vLLM's `AsyncLLM` in process (`PONDER_ENGINE=vllm`, extra `ponder[vllm]`).

N samples are N requests with n=1 and seeds seed+i (vLLM splits n>1 the same way), so any of
them can be aborted; prefix caching computes the shared prompt once. Raw sampled-token
logprobs come from vLLM (`logprobs=0`, `logprobs_mode="raw_logprobs"`). kl_uniform and
entropy_processed are exact when the stats processor is on (`PONDER_VLLM_EXACT_STATS`, default
true: `vllm_processor.PonderStatsProcessor` + `vllm_stats.StatsWorkerExtension`); otherwise they
are approximated from the top-20 logprobs and responses say `exact: false`.

What needs vLLM itself is imported lazily, so this module imports (and its pure helpers are
tested) without vLLM installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..errors import EngineError, EngineNotReady, RequestTooLarge, UnsupportedRequest
from ..stops import StopMatcher
from ..types import (
    Generation,
    ProgressCallback,
    SampleCallback,
    SamplingParams,
    Session,
    StreamDelta,
)
from . import chunked
from .base import punctuation_ids, render_plain_content, sample_each
from .vllm_convert import (
    CPU_SEED_BUG,
    TOP_LOGPROBS_APPROX,
    VllmOptions,
    Whole,
    empty_sample,
    engine_args_kwargs,
    sampling_kwargs,
    to_prompt_logprobs,
    to_sample,
)
from .vllm_fanout import FanOut

log = logging.getLogger("ponder.engine")

__all__ = ["VllmEngine", "VllmOptions", "engine_args_kwargs", "sampling_kwargs", "to_sample"]


class VllmEngine:
    """The Engine protocol over `vllm.v1.engine.async_llm.AsyncLLM`."""

    def __init__(self, opts: VllmOptions, chat_template: str | None = None) -> None:
        self.opts = opts
        self._template_override = chat_template
        self.model_name = opts.served_name
        self.exact_stats = opts.exact_stats
        self.continues_chat = True
        self.keeps_stop_tokens = True
        self.lockstep = 1
        """Each sample is its own vLLM request (vLLM batches them itself)."""
        self.reports_admission = False  # vLLM queues internally: deadlines count from arrival
        self.n_vocab = 0
        self.max_model_len = 0
        self._engine: Any = None
        self._tokenizer: Any = None
        self._eos: frozenset[int] = frozenset()
        self._punct: frozenset[int] = frozenset()
        self._seeds_unsafe = False
        self._ready = False
        self._running = 0

    # ------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def in_flight(self) -> int:
        return self._running

    @property
    def queue_depth(self) -> int:
        """vLLM schedules internally; its waiting queue is `vllm:num_requests_waiting`."""
        return 0

    async def start(self) -> None:
        """Build vLLM's engine in a worker thread (loading takes minutes on a big model and
        `from_engine_args` is synchronous: /health keeps answering), then probe it. Exact
        stats are used when the installed vLLM and the runner it chose accept Ponder's
        processor and it records stats; otherwise one warning says why and responses say
        `exact: false`."""
        if self.exact_stats:
            from .vllm_processor import INTERFACES

            if not INTERFACES:
                self._no_exact("this vLLM has neither the V1 nor the V2 logits-processor API")
        try:
            self._engine = await asyncio.to_thread(self._build)
        except Exception as exc:
            if not self.exact_stats or "LogitsProcessor" not in f"{exc!r}{exc.__cause__!r}":
                raise
            self._no_exact(f"vLLM refused the stats processor ({type(exc).__name__}: {exc})")
            self._engine = await asyncio.to_thread(self._build)
        self._tokenizer = self._engine.get_tokenizer()
        self.n_vocab = int(self._engine.model_config.get_vocab_size())
        self.max_model_len = int(self._engine.model_config.max_model_len)
        eos = getattr(self._tokenizer, "eos_token_id", None)
        self._eos = frozenset([eos] if isinstance(eos, int) else [])
        self._punct = punctuation_ids(
            lambda c: list(self._tokenizer.encode(c, add_special_tokens=False))
        )
        gen = await self.sample(self.tokenize("Hello"), SamplingParams(max_tokens=2), 1)
        if not gen.samples[0].n_tokens:
            raise EngineError("vLLM produced no token at start-up")
        if self.exact_stats and not gen.exact:
            self._no_exact("the stats processor recorded nothing for the start-up probe")
        self._ready = True
        log.info("vLLM engine ready: %s (exact stats: %s)", self.opts.model, self.exact_stats)

    def _build(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        opts = dataclasses.replace(self.opts, exact_stats=self.exact_stats)
        if current_platform.is_cpu():
            if opts.chunked_prefill is None:
                log.info(
                    "vLLM CPU build: chunked prefill off (%s); PONDER_VLLM_CHUNKED_PREFILL=true "
                    "turns it on and then refuses seeds",
                    CPU_SEED_BUG,
                )
                opts = dataclasses.replace(opts, chunked_prefill=False)
            self._seeds_unsafe = bool(opts.chunked_prefill)
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args_kwargs(opts)))

    def _no_exact(self, why: str) -> None:
        log.warning(
            "exact per-token stats are off: %s. Self-certainty and CNTP use the top-%d "
            "approximation and responses say exact: false.",
            why,
            TOP_LOGPROBS_APPROX,
        )
        self.exact_stats = False

    async def close(self) -> None:
        self._ready = False
        if self._engine is not None:
            await asyncio.to_thread(self._engine.shutdown)
            self._engine = None

    # ------------------------------------------------------------ tokens

    @property
    def chat_template(self) -> str | None:
        """PONDER_CHAT_TEMPLATE's text, else the tokenizer's own template."""
        if self._template_override:
            return self._template_override
        return getattr(self._tokenizer, "chat_template", None)

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        if self._tokenizer is None:
            raise EngineNotReady("the model is still loading")
        tok, template = self._tokenizer, self._template_override
        return render_plain_content(
            messages,
            lambda msgs: str(
                tok.apply_chat_template(
                    msgs,
                    tools=tools,
                    chat_template=template,
                    add_generation_prompt=True,
                    tokenize=False,
                )
            ),
            lambda text: list(tok.encode(text, add_special_tokens=False)),
            lambda text: list(
                tok.encode(text, add_special_tokens=False, split_special_tokens=True)
            ),
        )

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        if self._tokenizer is None:
            raise EngineNotReady("the model is still loading")
        return list(self._tokenizer.encode(text, add_special_tokens=add_special))

    def detokenize(self, token_ids: list[int], special: bool = False) -> str:
        return str(self._tokenizer.decode(token_ids, skip_special_tokens=not special))

    def tokenizer_info(self) -> dict[str, Any]:
        if self._tokenizer is None:
            raise EngineNotReady("the model is still loading")
        tok = self._tokenizer
        return {
            "tokenizer_class": type(tok).__name__,
            "bos_token": tok.bos_token,
            "eos_token": tok.eos_token,
            "pad_token": tok.pad_token,
            "add_bos_token": bool(getattr(tok, "add_bos_token", False)),
            "chat_template": self.chat_template,
            "model_max_length": self.max_model_len,
            "vocab_size": self.n_vocab,
        }

    def _piece(self, token: int) -> str:
        """Text of one token; "" for end-of-sequence tokens."""
        return "" if token in self._eos else self.detokenize([token])

    def _full_piece(self, token: int) -> str:
        """Text of one prompt token, special tokens rendered (echo shows the prompt as sent)."""
        return self.detokenize([token], special=True)

    def check_fits(self, prompt_tokens: int, max_tokens: int, samples: int) -> None:
        if prompt_tokens + max_tokens > self.max_model_len:
            raise RequestTooLarge(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the "
                f"model's context length of {self.max_model_len} tokens",
                "max_tokens",
            )
        if samples > self.opts.max_num_seqs:
            raise RequestTooLarge(
                f"at most {self.opts.max_num_seqs} samples per request (max_num_seqs)", "samples"
            )

    def default_max_tokens(self, prompt_tokens: int, samples: int) -> int:
        return max(1, self.max_model_len - prompt_tokens)

    # ------------------------------------------------------------ generation

    async def sample_many(
        self, requests: list[tuple[list[int], SamplingParams, int]]
    ) -> list[Generation]:
        return await sample_each(self, requests)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """vLLM's prefix cache already reuses a growing prefix: a session is the engine."""
        yield self

    @staticmethod
    def _params(kwargs: dict[str, Any]) -> Any:
        """vllm.SamplingParams from `sampling_kwargs` (output_kind given by name)."""
        from vllm.sampling_params import RequestOutputKind

        from vllm import SamplingParams as VSamplingParams

        kw = dict(kwargs)
        kw["output_kind"] = RequestOutputKind[kw["output_kind"]]
        if "structured_outputs" in kw:
            from vllm.sampling_params import StructuredOutputsParams

            kw["structured_outputs"] = StructuredOutputsParams(**kw["structured_outputs"])
        return VSamplingParams(**kw)

    @staticmethod
    def _prompt(prompt_ids: list[int]) -> Any:
        from vllm.inputs import tokens_input

        return tokens_input(prompt_ids)

    async def _one(self, prompt_ids: list[int], sp: Any, request_id: str) -> Any:
        """The request's final RequestOutput (one CompletionOutput, n=1)."""
        final = None
        gen = self._engine.generate(self._prompt(prompt_ids), sp, request_id)
        async with contextlib.aclosing(gen) as stream:
            async for out in stream:
                final = out
        if final is None or not final.outputs:
            raise EngineError(f"vLLM returned no output for {request_id}")
        return final

    def _check_seed(self, params: SamplingParams) -> None:
        if self._seeds_unsafe and params.seed is not None:
            raise UnsupportedRequest(
                "seed is not supported by this server: it runs vLLM's CPU build with chunked "
                f"prefill on ({CPU_SEED_BUG}); send the request without a seed",
                "seed",
            )

    async def _abort(self, ids: list[str]) -> None:
        """Abort these requests in vLLM and drop whatever stats the worker recorded for them
        (vLLM handles the abort before the RPC, so no step records after the drop). Shielded:
        it runs while the caller is being cancelled."""

        async def run() -> None:
            with contextlib.suppress(Exception):
                await self._engine.abort(ids)
            if self.exact_stats:
                with contextlib.suppress(Exception):
                    await self._fetch_stats(ids)

        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(run())

    async def stats_held(self) -> int:
        """Requests whose stats vLLM's workers still hold (0 when nothing leaked)."""
        if not self.exact_stats:
            return 0
        counts = await self._engine.collective_rpc("ponder_stats_count")
        return int(sum(counts or []))

    async def _fetch_stats(self, keys: list[str]) -> dict[str, dict[str, list[float]]]:
        results = await self._engine.collective_rpc("ponder_pop_stats", args=(keys,))
        merged: dict[str, dict[str, list[float]]] = {}
        for per_worker in results or []:
            for key, stats in (per_worker or {}).items():
                if stats.get("position") and key not in merged:
                    merged[key] = stats
        return merged

    async def sample(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        samples: int,
        on_progress: ProgressCallback | None = None,
        on_sample: SampleCallback | None = None,
    ) -> Generation:
        if self._engine is None:
            raise EngineNotReady("the model is still loading")
        self._check_seed(params)
        if params.stop_entropy is not None or params.stop_confidence is not None:
            return await self._draft(prompt_ids, params, samples)  # (on_sample not called)
        return await self._sample(prompt_ids, params, samples, on_progress, on_sample)

    def _request_params(self, params: SamplingParams, ids: list[str]) -> list[Any]:
        """vLLM SamplingParams of each sample's request: sample i seeded seed + i, its stats
        keyed by its request id; the prompt is scored once, by the first request."""
        unscored = dataclasses.replace(params, prompt_logprobs=None)
        return [
            self._params(
                sampling_kwargs(
                    params if i == 0 else unscored,
                    None if params.seed is None else params.seed + i,
                    stats_key=rid if self.exact_stats else None,
                    punct_ids=self._punct,
                )
            )
            for i, rid in enumerate(ids)
        ]

    async def _sample(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        samples: int,
        on_progress: ProgressCallback | None = None,
        on_sample: SampleCallback | None = None,
    ) -> Generation:
        started = time.perf_counter()
        base = uuid.uuid4().hex
        ids = [f"ponder-{base}-{i}" for i in range(samples)]
        sps = self._request_params(params, ids)
        judge = None
        if on_sample is not None:
            callback = on_sample

            def judge(i: int, out: Any) -> bool:
                sample, _ = to_sample(
                    out.outputs[0], i, params, self.n_vocab, None, self._piece, self._punct
                )
                return callback(sample)

        one = lambda i: self._one(prompt_ids, sps[i], ids[i])  # noqa: E731
        fan = FanOut(ids, one, self._engine.abort, on_progress, judge)
        self._running += 1
        try:
            finals = await fan.run()
        except BaseException as exc:
            await self._abort(ids)
            if isinstance(exc, asyncio.CancelledError | EngineError):
                raise
            raise EngineError(f"vLLM failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._running -= 1
        gen = await self._generation(prompt_ids, params, ids, finals)
        gen.generate_s = time.perf_counter() - started
        return gen

    async def _generation(
        self, prompt_ids: list[int], params: SamplingParams, ids: list[str], finals: list[Any]
    ) -> Generation:
        """Samples (with the processor's exact stats when there are any) from vLLM's outputs."""
        stats = await self._fetch_stats(ids) if self.exact_stats else {}
        scored = None
        if params.prompt_logprobs is not None:
            plp = list(next(f for f in finals if f is not None).prompt_logprobs or [])
            scored = to_prompt_logprobs(prompt_ids, plp, params.prompt_logprobs, self._full_piece)
        drawn, all_exact = [], True
        for i, final in enumerate(finals):
            if final is None:  # cut short, and vLLM reported nothing of it
                log.warning("vLLM sent no output for an aborted sample: its tokens are unknown")
                drawn.append(empty_sample(i))
                continue
            s, exact = to_sample(
                final.outputs[0],
                i,
                params,
                self.n_vocab,
                stats.get(ids[i]),
                self._piece,
                self._punct,
            )
            drawn.append(s)
            all_exact &= exact or s.finish_reason == "cancelled"  # cut short: votes nothing
        return Generation(drawn, len(prompt_ids), 0.0, 0.0, exact=all_exact, prompt_logprobs=scored)

    async def _draft(
        self, prompt_ids: list[int], params: SamplingParams, samples: int
    ) -> Generation:
        """`stop_entropy` and `stop_confidence` on vLLM: chunks cut client-side (`chunked`)."""
        started = time.perf_counter()
        gen = await chunked.generate(
            lambda ids, p: self._sample(ids, p, 1), self.detokenize, prompt_ids, params, samples
        )
        gen.generate_s = time.perf_counter() - started
        return gen

    async def stream(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[StreamDelta]:
        if self._engine is None:
            raise EngineNotReady("the model is still loading")
        self._check_seed(params)
        rid = f"ponder-{uuid.uuid4().hex}-0"
        key = rid if self.exact_stats else None
        sp = self._params(
            sampling_kwargs(params, params.seed, stats_key=key, stream=True, punct_ids=self._punct)
        )
        text, emitted = "", 0
        held = StopMatcher(params.stop)
        token_ids: list[int] = []
        logprobs: list[Any] = []
        finish, stop_reason = None, None
        self._running += 1
        try:
            gen = self._engine.generate(self._prompt(prompt_ids), sp, rid)
            async with contextlib.aclosing(gen) as outputs:
                async for out in outputs:
                    o = out.outputs[0]
                    text += o.text
                    held.feed(o.text)
                    token_ids += list(o.token_ids)
                    logprobs += list(o.logprobs or [])
                    finish, stop_reason = o.finish_reason, o.stop_reason
                    safe = len(text) - held.holdback
                    if safe > emitted:
                        yield StreamDelta(text[emitted:safe])
                        emitted = safe
        except BaseException:
            await self._abort([rid])
            raise
        finally:
            self._running -= 1
        stats = await self._fetch_stats([rid]) if self.exact_stats else {}
        whole = Whole(text, token_ids, logprobs, finish, stop_reason)
        sample, _ = to_sample(
            whole, 0, params, self.n_vocab, stats.get(rid), self._piece, self._punct
        )
        if len(sample.text) > emitted:
            yield StreamDelta(sample.text[emitted:])
        yield StreamDelta("", sample=sample, prompt_tokens=len(prompt_ids))
