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
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from ..errors import EngineError, EngineNotReady, RequestTooLarge, UnsupportedRequest
from ..stops import StopMatcher, stop_index
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
from . import chunked
from .base import confidence_from_top, punctuation_ids, render_plain_content
from .vllm_stats import STATS_KEY, approximate, combine, effective_temperature

log = logging.getLogger("ponder.engine")

TOP_LOGPROBS_APPROX = 20
CPU_SEED_BUG = (
    "vLLM's CPU build stops its engine when a seeded request's prefill is split into chunks: "
    "torch CPU generators have no offset to rewind"
)


@dataclasses.dataclass(frozen=True)
class VllmOptions:
    """Engine options (Settings: PONDER_VLLM_*)."""

    model: str
    served_name: str
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    dtype: str = "auto"
    max_num_seqs: int = 256
    exact_stats: bool = True
    max_num_batched_tokens: int | None = None
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    load_format: str = "auto"
    enforce_eager: bool = False
    chunked_prefill: bool | None = None


def engine_args_kwargs(opts: VllmOptions) -> dict[str, Any]:
    """Keyword arguments of `vllm.AsyncEngineArgs` for these options."""
    kwargs: dict[str, Any] = {
        "model": opts.model,
        "served_model_name": [opts.served_name],
        "tensor_parallel_size": opts.tensor_parallel_size,
        "pipeline_parallel_size": opts.pipeline_parallel_size,
        "data_parallel_size": opts.data_parallel_size,
        "load_format": opts.load_format,
        "enforce_eager": opts.enforce_eager,
        "gpu_memory_utilization": opts.gpu_memory_utilization,
        "dtype": opts.dtype,
        "enable_prefix_caching": True,
        "max_num_seqs": opts.max_num_seqs,
        "logprobs_mode": "raw_logprobs",
        "max_logprobs": TOP_LOGPROBS_APPROX,
    }
    if opts.max_model_len:
        kwargs["max_model_len"] = opts.max_model_len
    if opts.max_num_batched_tokens:
        kwargs["max_num_batched_tokens"] = opts.max_num_batched_tokens
    if opts.chunked_prefill is not None:
        kwargs["enable_chunked_prefill"] = opts.chunked_prefill
    if opts.distributed_executor_backend:
        kwargs["distributed_executor_backend"] = opts.distributed_executor_backend
    if opts.exact_stats:
        kwargs["logits_processors"] = ["ponder.engines.vllm_processor:PonderStatsProcessor"]
        kwargs["worker_extension_cls"] = "ponder.engines.vllm_stats.StatsWorkerExtension"
    return kwargs


def sampling_kwargs(
    params: SamplingParams,
    seed: int | None,
    *,
    stats_key: str | None,
    stream: bool = False,
    punct_ids: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for one sample (n=1). A CNTP trial
    (`punct_stop`) stops at the punctuation token ids, which vLLM keeps in the output."""
    kwargs: dict[str, Any] = {
        "n": 1,
        "temperature": effective_temperature(params.temperature),
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else 0,
        "min_p": params.min_p,
        "seed": None if seed is None else seed % 2**63,
        "max_tokens": params.max_tokens,
        "stop": list(params.stop) or None,
        # The sampled token's raw logprob always; top-20 when stats must be approximated.
        "logprobs": max(
            params.top_logprobs,
            params.confidence_top_k,
            0 if stats_key else TOP_LOGPROBS_APPROX,
        ),
        "skip_special_tokens": True,
        "output_kind": "DELTA" if stream else "FINAL_ONLY",
    }
    if params.prompt_logprobs is not None:
        kwargs["prompt_logprobs"] = params.prompt_logprobs
    if params.punct_stop:
        kwargs["stop_token_ids"] = sorted(punct_ids)
    if stats_key:
        kwargs["extra_args"] = {STATS_KEY: stats_key}
    return kwargs


def _position_logprobs(position: Any) -> dict[int, float]:
    return {int(t): float(lp.logprob) for t, lp in position.items()}


def to_prompt_logprobs(
    prompt_ids: list[int], scored: list[Any], k: int, piece: Callable[[int], str]
) -> PromptLogprobs:
    """Ponder's PromptLogprobs from vLLM's `RequestOutput.prompt_logprobs` (None for the first
    token, then a {token id: Logprob} dict holding the prompt token and the top-k)."""
    if len(scored) != len(prompt_ids):
        raise EngineError("vLLM returned prompt logprobs for a different number of tokens")
    logprob: list[float | None] = []
    top: list[list[tuple[str, float]] | None] = []
    for tok, position in zip(prompt_ids, scored, strict=True):
        if position is None:
            logprob.append(None)
            top.append(None)
            continue
        lps = _position_logprobs(position)
        logprob.append(min(lps[tok], 0.0))
        best = sorted(lps.items(), key=lambda kv: -kv[1])[:k]
        top.append([(piece(t), lp) for t, lp in best])
    return PromptLogprobs([piece(t) for t in prompt_ids], logprob, top)


def to_sample(
    output: Any,
    index: int,
    params: SamplingParams,
    vocab: int,
    stats: dict[str, list[float]] | None,
    piece: Callable[[int], str],
    punct_ids: frozenset[int] = frozenset(),
) -> tuple[Sample, bool]:
    """A Ponder Sample from a vLLM `CompletionOutput`; the flag says whether its stats are
    exact (the processor's) or approximated from the top-k logprobs."""
    token_ids = [int(t) for t in output.token_ids]
    positions = [_position_logprobs(p) for p in (output.logprobs or [])]
    if len(positions) != len(token_ids):
        raise EngineError("vLLM returned logprobs for a different number of tokens")
    raw = np.asarray([positions[i][t] for i, t in enumerate(token_ids)], dtype=np.float32)
    per = combine(raw, stats, params.temperature) if stats is not None else None
    exact = per is not None
    if per is None:
        per = approximate(positions, token_ids, vocab, params.temperature)
    finish = output.finish_reason or "stop"
    if finish == "abort":
        finish = "cancelled"
    stop_reason = getattr(output, "stop_reason", None)
    if params.punct_stop and isinstance(stop_reason, int) and stop_reason in punct_ids:
        finish = "punct"
    top = None
    if params.top_logprobs > 0:
        top = [
            sorted(((piece(t), lp) for t, lp in p.items()), key=lambda x: -x[1])[
                : params.top_logprobs
            ]
            for p in positions
        ]
    text = output.text
    if params.stop and (cut := stop_index(text, params.stop)) != -1:
        text = text[:cut]
    confidence = np.zeros(0, dtype=np.float32)
    if params.confidence_top_k > 0:
        confidence, _ = confidence_from_top(positions, params.confidence_top_k)
    sample = Sample(
        index=index,
        text=text,
        token_ids=token_ids,
        finish_reason=finish,
        logprob=np.minimum(raw, 0.0),
        kl_uniform=per["kl_uniform"],
        logprob_processed=per["logprob_processed"],
        entropy_processed=per["entropy_processed"],
        top_logprobs=top,
        tokens_text=[piece(t) for t in token_ids],
        confidence=confidence,
    )
    return sample, exact


def _empty(index: int) -> Sample:
    z = np.zeros(0, dtype=np.float32)
    return Sample(index, "", [], "cancelled", z, z.copy(), z.copy(), z.copy())


class VllmEngine:
    """The Engine protocol over `vllm.v1.engine.async_llm.AsyncLLM`."""

    def __init__(self, opts: VllmOptions) -> None:
        self.opts = opts
        self.model_name = opts.served_name
        self.exact_stats = opts.exact_stats
        self.continues_chat = True
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

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        if self._tokenizer is None:
            raise EngineNotReady("the model is still loading")
        tok = self._tokenizer
        return render_plain_content(
            messages,
            lambda msgs: str(
                tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
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
            "chat_template": getattr(tok, "chat_template", None),
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

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Sampler]:
        """vLLM's prefix cache already reuses a growing prefix: a session is the engine."""
        yield self

    @staticmethod
    def _params(kwargs: dict[str, Any]) -> Any:
        """vllm.SamplingParams from `sampling_kwargs` (output_kind given by name)."""
        from vllm.sampling_params import RequestOutputKind

        from vllm import SamplingParams as VSamplingParams

        kw = dict(kwargs)
        kw["output_kind"] = RequestOutputKind[kw["output_kind"]]
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
        finished = 0
        done: set[int] = set()
        enough = False
        one_at_a_time = asyncio.Lock()

        async def run(i: int) -> Any:
            nonlocal finished, enough
            try:
                out = await self._one(prompt_ids, sps[i], ids[i])
            except EngineError:
                if enough:  # aborted below, and this vLLM sent no final output for it
                    return None
                raise
            done.add(i)
            finished += 1
            if on_progress is not None:
                on_progress(finished, samples)
            if on_sample is not None and not enough:

                def judge() -> bool:  # conversion and grading grow with the text
                    sample, _ = to_sample(
                        out.outputs[0], i, params, self.n_vocab, None, self._piece, self._punct
                    )
                    return on_sample(sample)

                async with one_at_a_time:  # off the event loop, one sample at a time
                    stop = not enough and await asyncio.to_thread(judge)
                if stop:  # enough: the samples still running are cut short
                    enough = True
                    running = [ids[j] for j in range(samples) if j not in done]
                    with contextlib.suppress(Exception):
                        await self._engine.abort(running)
            return out

        self._running += 1
        tasks = [asyncio.ensure_future(run(i)) for i in range(samples)]
        try:
            finals = await asyncio.gather(*tasks)
        except BaseException as exc:
            for t in tasks:
                t.cancel()
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
                drawn.append(_empty(i))
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
        whole = _Whole(text, token_ids, logprobs, finish, stop_reason)
        sample, _ = to_sample(
            whole, 0, params, self.n_vocab, stats.get(rid), self._piece, self._punct
        )
        if len(sample.text) > emitted:
            yield StreamDelta(sample.text[emitted:])
        yield StreamDelta("", sample=sample, prompt_tokens=len(prompt_ids))


@dataclasses.dataclass
class _Whole:
    """A streamed output put back together, shaped like vLLM's CompletionOutput."""

    text: str
    token_ids: list[int]
    logprobs: list[Any]
    finish_reason: str | None
    stop_reason: Any
