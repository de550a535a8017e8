"""Stop rules for engines that cannot apply them while decoding (vLLM for the entropy and
confidence rules, HTTP upstreams for all three): generate in chunks, then cut client-side.

- `stop_entropy`: keep the tokens before the first one whose processed entropy reaches the
  threshold (that position is where CNTP branches; its entropy goes in `next_entropy`);
- `punct_stop`: keep up to and including the first token whose text is one punctuation mark
  (`ends_trial`, the text form of CNTP's token-id rule);
- `stop_confidence`: keep up to the token that completes the first window of DeepConf
  confidences whose mean is below the threshold (`types.confidence_stop`), across chunks.
Tokens generated past a cut count as unused (they are paid for, and in usage). The samples
are drawn concurrently (vLLM batches them; an upstream gets parallel requests).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import numpy as np

from ..types import Generation, Sample, SamplingParams, confidence_stop
from .base import ends_trial

CHUNK = 16
"""Tokens drawn per call while looking for a cut."""

SampleOne = Callable[[list[int], SamplingParams], Awaitable[Generation]]


def _slice(sample: Sample, j: int, finish: str, next_entropy: float | None) -> Sample:
    # the text is left empty: the caller renders the joined text from token ids
    return sample.head(j, finish, "", next_entropy)


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
    plain = dataclasses.replace(params, stop_entropy=None, punct_stop=False, stop_confidence=None)
    drawn = await asyncio.gather(
        *(_one(sample_one, detokenize, prompt_ids, params, plain, i) for i in range(samples))
    )
    return Generation(
        [s for s, _, _, _ in drawn],
        max((p for _, _, p, _ in drawn), default=0),
        0.0,
        0.0,
        sum(u for _, u, _, _ in drawn),
        exact=all(e for _, _, _, e in drawn),
    )


async def _one(
    sample_one: SampleOne,
    detokenize: Callable[[list[int]], str],
    prompt_ids: list[int],
    params: SamplingParams,
    plain: SamplingParams,
    i: int,
) -> tuple[Sample, int, int, bool]:
    """Sample i, chunk by chunk: (the sample, tokens cut off, prompt tokens, exact)."""
    parts: list[Sample] = []
    got, chunk_no, unused, prompt_tokens, exact = 0, 0, 0, 0, True
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
        s, low = _cut_confidence(s, parts, got, params)
        unused += dropped + low + gen.unused_tokens
        parts.append(s)
        got += s.n_tokens
        chunk_no += 1
        if s.finish_reason != "length" or got >= params.max_tokens:
            break
    return _join(i, parts, params, detokenize), unused, prompt_tokens, exact


def _cut_confidence(
    s: Sample, parts: list[Sample], got: int, params: SamplingParams
) -> tuple[Sample, int]:
    """The confidence rule over the sample so far (earlier chunks never fired it)."""
    if params.stop_confidence is None:
        return s, 0
    window, threshold = params.stop_confidence
    seen = np.concatenate([p.confidence for p in parts] + [s.confidence])
    end = confidence_stop(seen, window, threshold)
    if end is None or end - got > s.n_tokens:
        return s, 0
    keep = end - got
    ended = s.finish_reason != "length" or got + s.n_tokens >= params.max_tokens
    if keep == s.n_tokens and ended:
        return s, 0  # fired on the trace's last token: it had ended anyway (as on llama.cpp)
    return _slice(s, keep, "confidence", None), s.n_tokens - keep


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
        confidence=cat("confidence"),
    )
