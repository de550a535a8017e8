"""CNTP's two stop rules for engines that cannot apply them while decoding (vLLM for the
entropy rule, HTTP upstreams for both): generate in chunks, then cut client-side.

- `stop_entropy`: keep the tokens before the first one whose processed entropy reaches the
  threshold (that position is where CNTP branches; its entropy goes in `next_entropy`);
- `punct_stop`: keep up to and including the first token whose text is one punctuation mark
  (`ends_trial`, the text form of CNTP's token-id rule).
Tokens generated past a cut count as unused (they are paid for, and in usage).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import numpy as np

from ..types import Generation, Sample, SamplingParams
from .base import ends_trial

CHUNK = 16
"""Tokens drawn per call while looking for a cut."""

SampleOne = Callable[[list[int], SamplingParams], Awaitable[Generation]]


def _slice(sample: Sample, j: int, finish: str, next_entropy: float | None) -> Sample:
    return Sample(
        index=sample.index,
        text="",  # the caller renders the joined text from token ids
        token_ids=sample.token_ids[:j],
        finish_reason=finish,
        logprob=sample.logprob[:j],
        kl_uniform=sample.kl_uniform[:j],
        logprob_processed=sample.logprob_processed[:j],
        entropy_processed=sample.entropy_processed[:j],
        tokens_text=sample.tokens_text[:j],
        next_entropy=next_entropy,
    )


def cut(sample: Sample, params: SamplingParams) -> tuple[Sample, int]:
    """Apply the stop rules of `params` to a sample drawn without them.
    Returns the cut sample (or the same one) and the number of tokens cut off."""
    n = sample.n_tokens
    ends = [n]
    if params.stop_entropy is not None:
        hits = np.nonzero(sample.entropy_processed >= params.stop_entropy)[0]
        if hits.size:
            ends.append(int(hits[0]))
    if params.punct_stop:
        for i, piece in enumerate(sample.tokens_text):
            if ends_trial(piece):
                ends.append(i + 1)
                break
    j = min(ends)
    if j == n:
        return sample, 0
    entropy_cut = (
        params.stop_entropy is not None
        and j < n
        and (sample.entropy_processed[j] >= params.stop_entropy)
        and not (params.punct_stop and j > 0 and ends_trial(sample.tokens_text[j - 1]))
    )
    if entropy_cut:
        return _slice(sample, j, "entropy", float(sample.entropy_processed[j])), n - j
    return _slice(sample, j, "punct", None), n - j


async def generate(
    sample_one: SampleOne,
    detokenize: Callable[[list[int]], str],
    prompt_ids: list[int],
    params: SamplingParams,
    samples: int,
) -> Generation:
    """`samples` samples under `params`' stop rules, each drawn in chunks until a cut, a
    natural stop or the budget; sample i's chunk c is seeded seed + i + 1024 * c."""
    plain = dataclasses.replace(params, stop_entropy=None, punct_stop=False)
    drawn: list[Sample] = []
    unused, prompt_tokens, exact = 0, 0, True
    for i in range(samples):
        parts: list[Sample] = []
        got, chunk_no = 0, 0
        while True:
            chunk = dataclasses.replace(
                plain,
                max_tokens=min(CHUNK, params.max_tokens - got),
                seed=None if params.seed is None else params.seed + i + 1024 * chunk_no,
            )
            prefix = prompt_ids + [t for p in parts for t in p.token_ids]
            gen = await sample_one(prefix, chunk)
            prompt_tokens = prompt_tokens or gen.prompt_tokens
            exact &= gen.exact
            s, dropped = cut(gen.samples[0], params)
            unused += dropped + gen.unused_tokens
            parts.append(s)
            got += s.n_tokens
            chunk_no += 1
            if s.finish_reason != "length" or got >= params.max_tokens:
                break
        drawn.append(_join(i, parts, params, detokenize))
    return Generation(drawn, prompt_tokens, 0.0, 0.0, unused, exact=exact)


def _join(
    index: int, parts: list[Sample], params: SamplingParams, detokenize: Callable[[list[int]], str]
) -> Sample:
    tokens = [t for p in parts for t in p.token_ids]
    last = parts[-1]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts]).astype(np.float32)

    return Sample(
        index=index,
        text=detokenize(tokens),
        token_ids=tokens,
        finish_reason=last.finish_reason,
        logprob=cat("logprob"),
        kl_uniform=cat("kl_uniform"),
        logprob_processed=cat("logprob_processed"),
        entropy_processed=cat("entropy_processed"),
        tokens_text=[t for p in parts for t in p.tokens_text],
        next_entropy=last.next_entropy,
    )
