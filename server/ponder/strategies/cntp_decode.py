"""CNTP as a strategy that drives the engine step by step (docs/strategies.md section 5).

The loop needs one engine ability beyond plain sampling: stop a sample before a
high-entropy position (`stop_entropy`) and after a punctuation token (`punct_stop`). Draft with
`stop_entropy` at the branching threshold; where the draft stops, draw N_t trials from that
prefix in one batch, append the lowest-perplexity trial whole, repeat. Every call runs in one
engine session, so the growing prefix is never prefilled twice on engines that cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..stops import holdback, stop_index
from ..types import Engine, Generation, Sample, Sampler, SamplingParams, Session, phase
from . import cntp
from .base import Decision, SelectOptions, StrategyOptions
from .cntp import NAME, CntpOptions, branch_threshold, perplexity, pick_trial, trial_count
from .job import Decided, Hooks, Job, Kind
from .strategy import Defaults

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


Request = tuple[list[int], SamplingParams, int]


class CntpDecoder:
    """One CNTP decode as a state machine: `request()` is the next engine call it needs (a
    draft, or a step's trials), `receive()` takes that call's result. Driving it one call at
    a time gives `cntp_decode`; driving several in lockstep batches their calls together."""

    def __init__(
        self,
        detokenize: Callable[[list[int]], str],
        prompt_ids: list[int],
        params: SamplingParams,
        opts: CntpOptions,
        index: int = 0,
        on_text: Callable[[str], None] | None = None,
    ) -> None:
        self.detokenize = detokenize
        self.prompt_ids = prompt_ids
        self.params = params
        self.opts = opts
        self.index = index
        self.on_text = on_text
        self.threshold = branch_threshold(opts)
        self.out = _Output()
        self.result = CntpResult(
            sample=Sample(index, "", [], "stop", *(np.zeros(0, np.float32),) * 4)
        )
        self.text, self.emitted, self.call = "", 0, 0
        self.finish: str | None = None
        self.trials = 0  # > 0: the next call draws this many trials
        self.entropy = 0.0
        self.started = time.perf_counter()

    @property
    def done(self) -> bool:
        return self.finish is not None

    def request(self) -> Request | None:
        """The next engine call, or None when the decode is finished."""
        if self.finish is None and len(self.out.tokens) >= self.params.max_tokens:
            self._end("length")
        if self.finish is not None:
            return None
        remaining = self.params.max_tokens - len(self.out.tokens)
        base = dataclasses.replace(self.params, max_tokens=remaining, top_logprobs=0)
        seed = _call_seed(self.params.seed, self.call)
        prefix = self.prompt_ids + self.out.tokens
        if not self.trials:
            return prefix, dataclasses.replace(base, seed=seed, stop_entropy=self.threshold), 1
        k = self.trials
        # k == 1 only at the float boundary of the threshold: then sample one token.
        trial = dataclasses.replace(
            base, max_tokens=remaining if k > 1 else 1, seed=seed, punct_stop=k > 1
        )
        return prefix, trial, k

    def receive(self, gen: Generation) -> None:
        res = self.result
        self.call += 1
        res.prompt_tokens = res.prompt_tokens or gen.prompt_tokens
        res.queue_s += gen.queue_s
        res.unused_tokens += gen.unused_tokens
        res.exact &= gen.exact
        if not self.trials:
            draft = gen.samples[0]
            self.out.append(draft)
            if draft.finish_reason != "entropy":
                self.finish = draft.finish_reason
            elif len(self.out.tokens) < self.params.max_tokens:
                self.entropy = float(draft.next_entropy or 0.0)
                self.trials = max(1, trial_count(self.entropy, self.opts))
        else:
            k, trials = self.trials, gen.samples
            ppl = [perplexity(t.logprob_processed) for t in trials]
            best = pick_trial(ppl)
            spent = sum(t.n_tokens for t in trials)
            if k > 1:
                res.steps.append(CntpStep(len(self.out.tokens), self.entropy, k, ppl, best, spent))
                res.trial_tokens += spent
            res.unused_tokens += spent - trials[best].n_tokens
            self.out.append(trials[best])
            self.trials = 0
            if trials[best].finish_reason in ("stop", "length"):
                self.finish = trials[best].finish_reason
        self.text = self.detokenize(self.out.tokens)
        stops = self.params.stop
        if stops and (cut := stop_index(self.text, stops)) != -1:
            self.text, self.finish = self.text[:cut], "stop"
        if self.on_text is not None:
            safe = len(self.text) if self.finish else len(self.text) - holdback(self.text, stops)
            if safe > self.emitted:
                self.on_text(self.text[self.emitted : safe])
                self.emitted = safe
        if self.finish is not None:
            self._end(self.finish)

    def _end(self, finish: str) -> None:
        if finish in ("punct", "entropy"):
            finish = "length"
        self.finish = finish
        out, res = self.out, self.result
        res.generate_s = time.perf_counter() - self.started - res.queue_s
        res.sample = Sample(
            index=self.index,
            text=self.text,
            token_ids=out.tokens,
            finish_reason=finish,
            logprob=out.array("logprob"),
            kl_uniform=out.array("kl_uniform"),
            logprob_processed=out.array("logprob_processed"),
            entropy_processed=out.array("entropy_processed"),
            tokens_text=out.pieces,
        )


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
    decoder = CntpDecoder(detokenize, prompt_ids, params, opts, index, on_text)
    await _drive(decoder, sampler)
    return decoder.result


async def _drive(decoder: CntpDecoder, sampler: Sampler) -> None:
    """Run a decoder to the end, one engine call at a time."""
    while (req := decoder.request()) is not None:
        decoder.receive(await sampler.sample(*req))


async def cntp_run(
    engine: Engine,
    prompt_ids: list[int],
    params: SamplingParams,
    opts: CntpOptions,
    n: int,
    on_progress: Callable[[int, int], None] | None = None,
    on_text: Callable[[str], None] | None = None,
    enough: Callable[[list[Sample]], Awaitable[bool]] | None = None,
    wave: int | None = None,
) -> list[CntpResult]:
    """N CNTP decodes, decode i seeded with seed + i, in one session. Where the session can
    batch several prompts (`sample_many`), the decodes run in lockstep (`_lockstep`);
    otherwise one after another. With `enough` (adaptive stopping) they run in waves of
    `wave` decodes and stop after the first wave at which `enough` of the decodes so far is
    true: the decodes returned are the first ones."""
    decoders = [
        CntpDecoder(
            engine.detokenize,
            prompt_ids,
            dataclasses.replace(params, seed=None if params.seed is None else params.seed + i),
            opts,
            i,
            on_text,
        )
        for i in range(n)
    ]
    finished = _Finished(n, on_progress)
    waited = time.perf_counter()
    async with engine.session() as session:
        waited = time.perf_counter() - waited
        group = max(1, engine.lockstep // max(opts.max_trials, 1))
        step = min(group, wave) if wave else group
        for start in range(0, n, step):
            part = decoders[start : start + step]
            if len(part) == 1:
                for d in part:
                    await _drive(d, session)
                    finished.one()
            else:
                await _lockstep(part, session, finished)
            done = decoders[: start + len(part)]
            if enough is not None and await enough([d.result.sample for d in done]):
                decoders = done
                break
    results = [d.result for d in decoders]
    results[0].queue_s += waited
    return results


@dataclass
class _Finished:
    """Counts finished decodes and reports them."""

    total: int
    on_progress: Callable[[int, int], None] | None
    done: int = 0

    def one(self) -> None:
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


async def _lockstep(members: list[CntpDecoder], session: Session, finished: _Finished) -> None:
    """Run a group of decodes together: each round sends every live decode's next draft or
    trial call as one `sample_many` call."""
    while True:
        live = [(slot, d, r) for slot, d in enumerate(members) if (r := d.request()) is not None]
        if not live:
            return
        gens = await session.sample_many([r for _, _, r in live])
        for (_, d, _), g in zip(live, gens, strict=True):
            d.receive(g)
            if d.done:
                finished.one()


@dataclass(frozen=True)
class Cntp(Defaults):
    """The CNTP strategy: N decodes (`cntp_run`), combined by `cntp.decide`."""

    name: str = NAME
    kind: Kind = "decode"
    stats: frozenset[str] = frozenset({"logprob", "logprob_processed", "entropy_processed"})
    default_samples: int | None = 1
    options_key: str | None = NAME
    options_model: type[StrategyOptions] | None = CntpOptions

    def decide(self, samples: Sequence[Sample], options: SelectOptions) -> Decision | None:
        return cntp.decide(samples, options)

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided:
        opts = job.options
        started = time.perf_counter()
        adaptive_opts = opts.adaptive if job.samples > 1 else None
        enough = None
        if adaptive_opts is not None:
            from .adaptive import rule

            enough = rule(opts.answer, adaptive_opts)
        with phase("cntp"):
            results = await cntp_run(
                engine,
                job.prompt_ids,
                job.params,
                opts.of(CntpOptions),
                job.samples,
                hooks.on_progress,
                hooks.on_text,
                enough,
                adaptive_opts.wave if adaptive_opts is not None else None,
            )
        samples = [r.sample for r in results]
        stopped = None
        if adaptive_opts is not None:
            stopped = "settled" if len(samples) < job.samples else "ceiling"
            if stopped == "ceiling" and enough is not None and await enough(samples):
                stopped = "settled"  # it settled with the last wave
            if hooks.on_stop is not None:
                hooks.on_stop(stopped, len(samples))
        # Wall clock, each second counted once: the wait for the engine's session (on the
        # first decode's result), then everything after it. Summing the decodes' own times
        # counted lockstep decodes N times and the session wait twice.
        queue_s = results[0].queue_s
        gen = Generation(
            samples=samples,
            prompt_tokens=results[0].prompt_tokens,
            queue_s=queue_s,
            generate_s=max(time.perf_counter() - started - queue_s, 0.0),
            unused_tokens=sum(r.unused_tokens for r in results),
            exact=all(r.exact for r in results),
        )
        t0 = time.perf_counter()
        decision = await asyncio.to_thread(cntp.decide, samples, opts)
        if len(results) == 1:
            notes = results[0].stats(with_steps=job.details)
        else:
            counts = [r.counts() for r in results]
            notes = {k: sum(c[k] for c in counts) for k in counts[0]}
            for key in notes:
                decision.scores[key] = [float(c[key]) for c in counts]
        decision = dataclasses.replace(decision, notes={**decision.notes, **notes})
        return Decided(gen, decision, time.perf_counter() - t0, stopped)


STRATEGY = Cntp()
