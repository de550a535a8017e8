"""Decoding strategies that drive the engine step by step: CNTP (strategies.md section 5).

The loop needs one engine ability beyond plain sampling: stop a sample before a
high-entropy position (`stop_entropy`) and after a punctuation token (`punct_stop`). Draft with
`stop_entropy` at the branching threshold; where the draft stops, draw N_t trials from that
prefix in one batch, append the lowest-perplexity trial whole, repeat. Every call runs in one
engine session, so the growing prefix is never prefilled twice on engines that cache.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .engines.base import Engine, Sample, Sampler, SamplingParams
from .stops import holdback, stop_index
from .strategies.base import CntpOptions
from .strategies.cntp import branch_threshold, perplexity, pick_trial, trial_count

SEED_STRIDE = 1 << 32
CALL_STRIDE = 1 << 10


@dataclass
class CntpStep:
    """One branching step: where, how uncertain, the trials' perplexities and the pick."""

    position: int
    entropy: float
    trials: int
    perplexities: list[float]
    chosen: int
    trial_tokens: int


@dataclass
class CntpResult:
    sample: Sample
    steps: list[CntpStep] = field(default_factory=list)
    trial_tokens: int = 0
    unused_tokens: int = 0
    prompt_tokens: int = 0
    queue_s: float = 0.0
    generate_s: float = 0.0
    exact: bool = True

    def counts(self) -> dict[str, int]:
        """Steps that branched, trials drawn, tokens those trials generated."""
        return {
            "branched_steps": len(self.steps),
            "trials": sum(s.trials for s in self.steps),
            "trial_tokens": self.trial_tokens,
        }

    def stats(self, with_steps: bool) -> dict[str, object]:
        """`counts()`, plus every step (entropy, trial perplexities, pick) when asked."""
        out: dict[str, object] = dict(self.counts())
        if with_steps:
            out["steps"] = [dataclasses.asdict(s) for s in self.steps]
        return out


def _call_seed(seed: int | None, call: int) -> int | None:
    """Seed of engine call `call` of the decode seeded `seed` (trial i adds i)."""
    return None if seed is None else seed * SEED_STRIDE + call * CALL_STRIDE


class _Output:
    """The tokens appended so far, with their stats."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.pieces: list[str] = []
        self.arrays: dict[str, list[np.ndarray]] = {
            k: [] for k in ("logprob", "kl_uniform", "logprob_processed", "entropy_processed")
        }

    def append(self, s: Sample) -> None:
        self.tokens += s.token_ids
        self.pieces += s.tokens_text
        for k, parts in self.arrays.items():
            parts.append(getattr(s, k))

    def array(self, name: str) -> np.ndarray:
        parts = self.arrays[name]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


async def cntp_decode(
    sampler: Sampler,
    detokenize: Callable[[list[int]], str],
    prompt_ids: list[int],
    params: SamplingParams,
    opts: CntpOptions,
    index: int = 0,
    on_text: Callable[[str], None] | None = None,
) -> CntpResult:
    """One CNTP decode of at most params.max_tokens output tokens, seeded by params.seed."""
    threshold = branch_threshold(opts)
    out = _Output()
    result = CntpResult(sample=Sample(index, "", [], "stop", *(np.zeros(0, np.float32),) * 4))
    text, emitted, finish, call = "", 0, None, 0
    started = time.perf_counter()
    while finish is None:
        remaining = params.max_tokens - len(out.tokens)
        if remaining <= 0:
            finish = "length"
            break
        base = dataclasses.replace(params, max_tokens=remaining, top_logprobs=0)
        draft_params = dataclasses.replace(
            base, seed=_call_seed(params.seed, call), stop_entropy=threshold
        )
        call += 1
        gen = await sampler.sample(prompt_ids + out.tokens, draft_params, 1)
        result.prompt_tokens = result.prompt_tokens or gen.prompt_tokens
        result.queue_s += gen.queue_s
        result.unused_tokens += gen.unused_tokens
        result.exact &= gen.exact
        draft = gen.samples[0]
        out.append(draft)
        if draft.finish_reason != "entropy":
            finish = draft.finish_reason
        elif len(out.tokens) < params.max_tokens:
            entropy = float(draft.next_entropy or 0.0)
            k = max(1, trial_count(entropy, opts))
            # k == 1 only at the float boundary of the threshold: then sample one token.
            trial_params = dataclasses.replace(
                base,
                max_tokens=params.max_tokens - len(out.tokens) if k > 1 else 1,
                seed=_call_seed(params.seed, call),
                punct_stop=k > 1,
            )
            call += 1
            tgen = await sampler.sample(prompt_ids + out.tokens, trial_params, k)
            result.exact &= tgen.exact
            trials = tgen.samples
            ppl = [perplexity(t.logprob_processed) for t in trials]
            best = pick_trial(ppl)
            spent = sum(t.n_tokens for t in trials)
            if k > 1:
                result.steps.append(CntpStep(len(out.tokens), entropy, k, ppl, best, spent))
                result.trial_tokens += spent
            result.unused_tokens += spent - trials[best].n_tokens
            out.append(trials[best])
            if trials[best].finish_reason in ("stop", "length"):
                finish = trials[best].finish_reason
        text = detokenize(out.tokens)
        if params.stop and (cut := stop_index(text, params.stop)) != -1:
            text, finish = text[:cut], "stop"
        if on_text is not None:
            safe = len(text) if finish else len(text) - holdback(text, params.stop)
            if safe > emitted:
                on_text(text[emitted:safe])
                emitted = safe
    if finish in ("punct", "entropy", None):
        finish = "length"
    result.generate_s = time.perf_counter() - started - result.queue_s
    result.sample = Sample(
        index=index,
        text=text,
        token_ids=out.tokens,
        finish_reason=finish,
        logprob=out.array("logprob"),
        kl_uniform=out.array("kl_uniform"),
        logprob_processed=out.array("logprob_processed"),
        entropy_processed=out.array("entropy_processed"),
        tokens_text=out.pieces,
    )
    return result


async def cntp_run(
    engine: Engine,
    prompt_ids: list[int],
    params: SamplingParams,
    opts: CntpOptions,
    n: int,
    on_progress: Callable[[int, int], None] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> list[CntpResult]:
    """N CNTP decodes, decode i seeded with seed + i, one after another in one session."""
    results: list[CntpResult] = []
    waited = time.perf_counter()
    async with engine.session() as session:
        waited = time.perf_counter() - waited
        for i in range(n):
            seed = None if params.seed is None else params.seed + i
            p = dataclasses.replace(params, seed=seed)
            results.append(
                await cntp_decode(session, engine.detokenize, prompt_ids, p, opts, i, on_text)
            )
            if on_progress is not None:
                on_progress(i + 1, n)
    results[0].queue_s += waited
    return results
