"""vLLM's engine: the pure conversions between Ponder's types and vLLM's (engine arguments,
sampling parameters, outputs to samples, prompt logprobs). No vLLM import: tested without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import EngineError
from ..stops import stop_index
from ..types import PromptLogprobs, Sample, SamplingParams
from .base import confidence_from_top
from .vllm_stats import STATS_KEY, approximate, combine, effective_temperature

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
        "min_tokens": params.min_tokens,
        "ignore_eos": params.ignore_eos,
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
    if params.json_schema is not None:  # vLLM's own structured outputs (its grammar backend)
        kwargs["structured_outputs"] = {"json": params.json_schema}
    elif params.grammar is not None:  # a Lark grammar with %json: vLLM's guidance backend
        kwargs["structured_outputs"] = {"grammar": params.grammar}
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


def empty_sample(index: int) -> Sample:
    """A sample cut short of which the engine reported nothing."""
    z = np.zeros(0, dtype=np.float32)
    return Sample(index, "", [], "cancelled", z, z.copy(), z.copy(), z.copy())


@dataclasses.dataclass
class Whole:
    """A streamed output put back together, shaped like vLLM's CompletionOutput."""

    text: str
    token_ids: list[int]
    logprobs: list[Any]
    finish_reason: str | None
    stop_reason: Any
