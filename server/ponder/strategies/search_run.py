"""Step-level search as strategies that drive the engine (docs/strategies.md section 10):
`beam` and `particles`. Each step continues every live partial solution by one step in one
engine session (`sample_many`: one call per distinct prefix, its children as that call's
samples), so on llama.cpp a child's prompt is its parent's cached sequence plus the step's
last token (no re-prefill of the shared prefix), and vLLM's prefix cache does the same. The
partial solutions are then scored (`Scoring`), and kept (beam) or resampled (particles).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from .. import verifiers
from ..errors import InvalidRequest, UnsupportedRequest
from ..stops import holdback, stop_index
from ..types import Engine, Generation, Sample, SamplingParams, Session, phase
from . import followup, prompts
from .base import Decision, SelectOptions, StrategyOptions
from .job import Decided, Hooks, Job, Kind
from .search import (
    CONFIDENCE_TOP_K,
    BeamOptions,
    ParticlesOptions,
    SearchOptions,
    beam_decision,
    beam_width,
    log_weight,
    resample,
    softmax,
    top,
    weighted_vote,
)
from .strategy import Defaults

SEED_STRIDE = 1 << 32
STEP_STRIDE = 1 << 24
CALL_STRIDE = 1 << 8
"""Seeds: the request's seed s gives step t's call r the seed s*2^32 + t*2^24 + r*2^8 (its
samples add their index), so a seeded search is the same search every time."""

_EMPTY = np.zeros(0, dtype=np.float32)


@dataclass(eq=False)
class Node:
    """One step of one partial solution (the root: the prompt, no step); compared by
    identity (a node is one place in the tree)."""

    id: int
    parent: int
    depth: int
    tokens: list[int]
    """The partial solution's tokens, this step's last."""
    steps: list[Sample]
    """Its steps' samples, root first (the root has none)."""
    text: str = ""
    finish: str | None = None
    score: float | None = None
    step_tokens: int = 0
    last_ids: list[int] = field(default_factory=list)
    """The tokens of the step's last engine call (where the step's end is read)."""

    @property
    def finished(self) -> bool:
        return self.finish is not None

    def signal(self, name: str) -> float | None:
        """Mean over its tokens of a per-token signal (self-certainty, DeepConf confidence)."""
        parts = [getattr(s, name) for s in self.steps]
        n = sum(len(p) for p in parts)
        if n == 0:
            return None
        return float(sum(float(np.sum(p, dtype=np.float64)) for p in parts) / n)

    def sample(self, index: int) -> Sample:
        """The partial solution as one sample (its steps' tokens and stats joined)."""

        def joined(name: str) -> np.ndarray:
            parts = [getattr(s, name) for s in self.steps]
            return np.concatenate(parts) if parts else _EMPTY

        tops = [s.top_logprobs for s in self.steps]
        return Sample(
            index=index,
            text=self.text,
            token_ids=list(self.tokens),
            finish_reason=self.finish or "length",
            logprob=joined("logprob"),
            kl_uniform=joined("kl_uniform"),
            logprob_processed=joined("logprob_processed"),
            entropy_processed=joined("entropy_processed"),
            top_logprobs=[t for top in tops for t in (top or [])] if any(tops) else None,
            tokens_text=[p for s in self.steps for p in s.tokens_text],
            confidence=joined("confidence"),
        )


@dataclass
class Tree:
    """Every node of a search, and what the response says about it."""

    nodes: list[Node] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    """Per step: the nodes made, their scores, and which were kept or resampled."""
    generated: int = 0
    steps: int = 0
    calls: int = 0
    """Engine calls made (one per distinct prefix continued)."""
    wasted: int = 0
    """Tokens generated past a step's delimiter and cut off (engines that cannot stop there)."""
    prefix_tokens: int = 0
    """Their prompts' tokens: what an engine without a prefix cache would prefill."""

    def root(self) -> Node:
        node = Node(0, -1, 0, [], [])
        self.nodes.append(node)
        return node

    def child(self, parent: Node, step: Sample) -> Node:
        node = Node(
            len(self.nodes),
            parent.id,
            parent.depth + 1,
            parent.tokens + step.token_ids,
            [*parent.steps, step],
            step_tokens=step.n_tokens,
            last_ids=step.token_ids,
        )
        self.nodes.append(node)
        self.generated += step.n_tokens
        return node

    def extend(self, node: Node, more: Sample) -> None:
        """A step that was only blank text before its delimiter goes on in `more`."""
        node.steps[-1] = _joined(node.steps[-1], more)
        node.tokens = node.tokens + more.token_ids
        node.step_tokens += more.n_tokens
        node.last_ids = more.token_ids
        self.generated += more.n_tokens

    def note(self, details: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "steps": self.steps,
            "nodes": len(self.nodes) - 1,
            "step_tokens": self.generated + self.wasted,
            "calls": self.calls,
            "prefix_tokens": self.prefix_tokens,
        }
        if details:
            out["tree"] = self.events
        return out


def _joined(a: Sample, b: Sample) -> Sample:
    """Two pieces of one step as one sample."""

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(a, name), getattr(b, name)])

    tops = None
    if a.top_logprobs is not None or b.top_logprobs is not None:
        tops = (a.top_logprobs or []) + (b.top_logprobs or [])
    return Sample(
        index=a.index,
        text=a.text + b.text,
        token_ids=a.token_ids + b.token_ids,
        finish_reason=b.finish_reason,
        logprob=cat("logprob"),
        kl_uniform=cat("kl_uniform"),
        logprob_processed=cat("logprob_processed"),
        entropy_processed=cat("entropy_processed"),
        top_logprobs=tops,
        tokens_text=a.tokens_text + b.tokens_text,
        confidence=cat("confidence"),
    )


def _finish(node: Node, whole: str, step: str, job: Job, opts: SearchOptions) -> None:
    """Whether the step ended the partial solution (`whole`: its text; `step`: the step's
    tokens as text, the delimiter included where it stopped the step), and its text."""
    params, finish = job.params, node.steps[-1].finish_reason
    node.text = whole
    if params.stop and (cut := stop_index(whole, params.stop)) != -1:
        node.text, node.finish = whole[:cut], "stop"  # the request's own stop string
    elif finish == "stop":
        if opts.delimiter not in step:
            node.finish = "stop"  # end of generation, not the step's delimiter
    elif finish == "length":
        if len(node.tokens) >= params.max_tokens:
            node.finish = "length"  # else the step reached max_step_tokens
    else:
        node.finish = finish
    if node.finish is None and node.depth >= opts.max_steps:
        node.finish = "length"


class Search:
    """One request's search: its engine calls, scoring, tree and usage."""

    def __init__(self, job: Job, engine: Engine, hooks: Hooks, opts: SearchOptions) -> None:
        self.job, self.engine, self.hooks, self.opts = job, engine, hooks, opts
        self.tree = Tree()
        self.calls = followup.Calls(Hooks(), 0, 0)  # the scorer's calls (no progress of their own)
        self.outside: followup.Calls | None = None
        self.emitted = 0
        self.prompt_tokens = 0
        self.queue_s = 0.0
        self.exact = True

    def params(self, node: Node, step: int, call: int, spent: int = 0) -> SamplingParams:
        """A call continuing `node` by (the rest of) a step: `spent` tokens of it are done."""
        p, o = self.job.params, self.opts
        remaining = min(p.max_tokens - len(node.tokens), o.max_step_tokens - spent)
        seed = (
            None
            if p.seed is None
            else p.seed * SEED_STRIDE + step * STEP_STRIDE + call * CALL_STRIDE
        )
        return dataclasses.replace(
            p,
            max_tokens=remaining,
            # an engine that drops the token completing a stop string: the step is cut here
            stop=(*p.stop, o.delimiter) if self.engine.keeps_stop_tokens else p.stop,
            seed=seed,
            min_tokens=max(0, min(p.min_tokens - len(node.tokens), o.max_step_tokens)),
            confidence_top_k=CONFIDENCE_TOP_K if o.scorer == "confidence" else 0,
        )

    async def expand(
        self, session: Session, parents: Sequence[tuple[Node, int]], step: int
    ) -> list[list[Node]]:
        """Each (parent, k): k children, one step each; parents' calls in one batch."""
        requests = [
            (self.job.prompt_ids + node.tokens, self.params(node, step, r), k)
            for r, (node, k) in enumerate(parents)
        ]
        gens = await self._calls(session, requests)
        for g in gens:
            self.queue_s += g.queue_s
            self.exact &= g.exact
        self.prompt_tokens = self.prompt_tokens or gens[0].prompt_tokens
        children = await asyncio.to_thread(self._children, parents, gens)
        flat = [c for group in children for c in group]
        await self._unblank(session, flat, step, len(parents))
        await self.score(flat)
        self.tree.steps = step + 1
        return children

    async def _unblank(self, session: Session, nodes: list[Node], step: int, calls: int) -> None:
        """A step with nothing but blank text before its delimiter (an empty line when the
        delimiter is a newline) is no step: it goes on, within its max_step_tokens."""
        o = self.opts
        rounds = 0
        while pending := [
            n
            for n in nodes
            if not n.finished and not n.steps[-1].text.strip() and n.step_tokens < o.max_step_tokens
        ]:
            rounds += 1
            base = calls + rounds * len(nodes)
            requests = [
                (self.job.prompt_ids + n.tokens, self.params(n, step, base + r, n.step_tokens), 1)
                for r, n in enumerate(pending)
            ]
            gens = await self._calls(session, requests)
            for g in gens:
                self.queue_s += g.queue_s
                self.exact &= g.exact
            await asyncio.to_thread(self._extended, pending, gens)

    async def _calls(
        self, session: Session, requests: list[tuple[list[int], SamplingParams, int]]
    ) -> list[Generation]:
        self.tree.calls += len(requests)
        self.tree.prefix_tokens += sum(len(p) for p, _, _ in requests)
        with phase("search.step"):
            return await session.sample_many(requests)

    def _children(
        self, parents: Sequence[tuple[Node, int]], gens: Sequence[Generation]
    ) -> list[list[Node]]:
        """Each parent's new nodes with their texts (a worker thread: detokenizing grows
        with the partial solutions)."""
        children = [
            [self.tree.child(node, self._cut(s)) for s in g.samples]
            for (node, _), g in zip(parents, gens, strict=True)
        ]
        self._texts([c for group in children for c in group])
        return children

    def _extended(self, nodes: Sequence[Node], gens: Sequence[Generation]) -> None:
        """Blank steps gone on (`_unblank`), with their texts (a worker thread)."""
        for n, g in zip(nodes, gens, strict=True):
            self.tree.extend(n, self._cut(g.samples[0]))
        self._texts(nodes)

    def _cut(self, s: Sample) -> Sample:
        """A step that ran past its delimiter (an engine without `keeps_stop_tokens` is not
        sent it as a stop string), cut after the token that completes it; the tokens past
        it were generated and count in usage (`Tree.wasted`). Engines that stop there
        themselves: the sample as it is."""
        if self.engine.keeps_stop_tokens:
            return s
        delimiter, keep, window = self.opts.delimiter, len(self.opts.delimiter) - 1, ""
        for j, piece in enumerate(s.tokens_text):
            joined = window + piece  # the last characters before this piece, and the piece
            if delimiter in joined:
                text = "".join(s.tokens_text[: j + 1])
                self.tree.wasted += s.n_tokens - (j + 1)
                return s.head(j + 1, "stop", text[: text.index(delimiter)])
            window = joined[len(joined) - keep :] if keep else ""
        return s

    def _texts(self, nodes: Sequence[Node]) -> None:
        detokenize = self.engine.detokenize
        for node in nodes:
            step = detokenize(node.last_ids)
            _finish(node, detokenize(node.tokens), step, self.job, self.opts)

    async def score(self, nodes: list[Node]) -> None:
        """Each node's score: the mean self-certainty or DeepConf confidence of its tokens,
        or P(Yes) that the partial solution is right so far (the model, or a verifier)."""
        o = self.opts
        if o.scorer != "verify":
            name = "kl_uniform" if o.scorer == "self_certainty" else "confidence"
            for node in nodes:
                node.score = node.signal(name)
            return
        if o.verifier is not None:
            got = await self._outside(nodes)
        else:
            got = await asyncio.gather(*(self._verify(n) for n in nodes))
        for node, s in zip(nodes, got, strict=True):
            node.score = s

    async def _verify(self, node: Node) -> float | None:
        question = self.job.question

        def make(texts: list[str]) -> str:
            return prompts.fill(prompts.VERIFY_STEP, question=question, response=texts[0])

        ids, _ = await followup.fitted(self.engine, make, [node.text], 1)
        return followup.p_yes(
            await followup.ask(self.engine, ids, followup.greedy(1, verifiers.TOP_K), self.calls)
        )

    async def _outside(self, nodes: list[Node]) -> list[float | None]:
        spec = verifiers.get(str(self.opts.verifier))
        if spec is None:  # the configuration changed since the check
            raise InvalidRequest("the verifier is no longer configured", "ponder")
        if self.outside is None:
            self.outside = followup.Calls(Hooks(), 0, 0)
        outside = self.outside
        question = self.job.question

        async def one(client: httpx.AsyncClient, node: Node) -> float | None:
            prompt = prompts.fill(prompts.VERIFY_STEP, question=question, response=node.text)
            got = await verifiers.score(spec, client, prompt, question, node.text)
            outside.counted(got.prompt_tokens, got.completion_tokens)
            if got.error is not None:
                outside.failed.append(f"node {node.id}: {got.error} after {got.attempts}")
            return got.score

        async with httpx.AsyncClient() as client:
            return list(await asyncio.gather(*(one(client, n) for n in nodes)))

    def progress(self, step: int) -> None:
        if self.hooks.on_progress is not None:
            self.hooks.on_progress(step, self.opts.max_steps)

    def show(self, node: Node) -> None:
        """One partial solution's new text, streamed (a search of one sample: its only path)."""
        if self.hooks.on_text is None:
            return
        text = node.text
        safe = len(text) if node.finished else len(text) - holdback(text, self.job.params.stop)
        if safe > self.emitted:
            self.hooks.on_text(text[self.emitted : safe])
            self.emitted = safe

    def record(self, step: int, nodes: Sequence[Node], **marks: Sequence[Any]) -> None:
        if not self.job.details:
            return
        self.tree.events.append(
            {
                "step": step,
                "nodes": [
                    {
                        "id": n.id,
                        "parent": n.parent,
                        "tokens": n.step_tokens,
                        "text": n.steps[-1].text if n.steps else "",
                        "score": n.score,
                        "finish": n.finish,
                        **{k: v[i] for k, v in marks.items()},
                    }
                    for i, n in enumerate(nodes)
                ],
            }
        )

    def result(
        self, finals: Sequence[Node], started: float
    ) -> tuple[Generation, dict[str, Any], dict[str, dict[str, Any]]]:
        """The final partial solutions as the generation's samples, every token in usage."""
        samples = [n.sample(i) for i, n in enumerate(finals)]
        steps = Generation(
            samples=samples,
            prompt_tokens=self.prompt_tokens,
            queue_s=self.queue_s,
            generate_s=max(time.perf_counter() - started - self.queue_s, 0.0),
            unused_tokens=self.tree.generated + self.tree.wasted - sum(s.n_tokens for s in samples),
            exact=self.exact,
        )
        gen = followup.with_calls(steps, [], self.calls, self.outside)  # the scorer's tokens
        usage: dict[str, dict[str, Any]] = {}
        if self.calls.done:
            usage["followup"] = self.calls.note()
        if self.outside is not None:
            usage["verifier"] = {"name": self.opts.verifier, **self.outside.note()}
        return gen, self.tree.note(self.job.details), usage


@dataclass(frozen=True)
class StepSearch(Defaults):
    """What `beam` and `particles` share as strategy objects: a decoding kind (it continues
    partial answers: a chat turn only on engines that can, no structured outputs), decided
    only while it runs (`ponder eval` runs it rather than replaying it), no adaptive
    stopping, and the bound on every token it may generate."""

    name: str = ""
    kind: Kind = "decode"
    stats: frozenset[str] = frozenset({"kl_uniform"})
    default_samples: int | None = None
    options_model: type[StrategyOptions] | None = None
    replayable: bool = False

    @property
    def options_key(self) -> str | None:
        return self.name

    def own(self, options: SelectOptions) -> SearchOptions:
        assert self.options_model is not None
        got = options.of(self.options_model)
        assert isinstance(got, SearchOptions)
        return got

    def check(self, options: SelectOptions, samples: int) -> None:
        super().check(options, samples)
        if options.adaptive is not None:
            raise UnsupportedRequest(
                f"adaptive stopping does not combine with strategy '{self.name}' (it chooses "
                "among the partial solutions at every step)",
                "ponder.adaptive",
            )
        own = self.own(options)
        where = f"ponder.{self.name}"
        if own.verifier is not None:
            if own.scorer != "verify":
                raise InvalidRequest(
                    f"{self.name}.verifier scores with an external verifier: set scorer 'verify'",
                    f"{where}.verifier",
                )
            if verifiers.get(own.verifier) is None:
                known = ", ".join(verifiers.names()) or "none are configured"
                raise InvalidRequest(
                    f"{self.name}.verifier names no verifier this server configures ({known}; "
                    "PONDER_VERIFIERS)",
                    f"{where}.verifier",
                )

    def progress_total(self, options: SelectOptions, samples: int) -> int:
        return self.own(options).max_steps

    def followup_tokens(self, options: SelectOptions, samples: int, max_tokens: int) -> int:
        """Beyond samples x max_tokens: each step may give every one of the samples a step of
        up to max_step_tokens, for max_steps steps; a verifier scores each with one token."""
        own = self.own(options)
        steps = samples * own.max_steps * min(own.max_step_tokens, max_tokens)
        scored = samples * own.max_steps if own.scorer == "verify" else 0
        return max(0, steps - samples * max_tokens) + scored

    def decide(self, samples: Sequence[Sample], options: SelectOptions) -> Decision | None:
        return None  # it decides while it searches: see run


@dataclass(frozen=True)
class Beam(StepSearch):
    """Beam search over steps: the root expanded into N candidates, the best `beams` kept,
    each live one expanded into N / beams, until every kept beam has finished."""

    name: str = "beam"
    options_model: type[StrategyOptions] | None = BeamOptions

    def check(self, options: SelectOptions, samples: int) -> None:
        super().check(options, samples)
        own = options.of(BeamOptions)
        beams = beam_width(own, samples)
        if beams > samples or samples % beams:
            raise InvalidRequest(
                f"ponder.samples ({samples}) is the candidates per step, beams x expand: it "
                f"must be a multiple of beam.beams ({beams})",
                "ponder.beam.beams",
            )
        if own.expand is not None and beams * own.expand != samples:
            raise InvalidRequest(
                f"beam.beams x beam.expand ({beams} x {own.expand}) must equal "
                f"ponder.samples ({samples}), the candidates per step",
                "ponder.beam.expand",
            )

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided:
        opts = job.options.of(BeamOptions)
        beams = beam_width(opts, job.samples)
        expand = job.samples // beams
        search, started = Search(job, engine, hooks, opts), time.perf_counter()
        kept, done = [search.tree.root()], []
        async with engine.session() as session:
            for step in range(opts.max_steps):
                width = job.samples if step == 0 else expand
                children = await search.expand(session, [(n, width) for n in kept], step)
                made = [c for g in children for c in g]
                done += [c for c in made if c.finished]
                live = [c for c in made if not c.finished]
                kept = [live[i] for i in top([n.score for n in live], beams)]
                search.record(step, made, kept=[c in kept or c.finished for c in made])
                search.progress(step + 1)
                if len(made) == 1:
                    search.show(made[0])
                if not kept or len(done) >= beams:
                    break
        for n in kept:  # the steps ran out: unfinished beams end here
            n.finish = "length"
            search.show(n)
        finals = done + kept
        search.progress(opts.max_steps)
        gen, notes, usage = search.result(finals, started)
        t0 = time.perf_counter()
        scores = [n.score for n in finals]
        decision = await asyncio.to_thread(
            beam_decision, self.name, gen.samples, job.options, scores, opts.select
        )
        decision.notes = {**decision.notes, "search": {"beams": beams, "expand": expand, **notes}}
        decision.usage = usage
        return Decided(gen, decision, time.perf_counter() - t0)


@dataclass(frozen=True)
class Particles(StepSearch):
    """Particle filtering over steps (Puri et al. 2025): N particles; after each step the
    weights are softmax(log-weight / temperature) of every particle (finished ones keep
    their last score) and N are drawn with replacement; the answer is the weighted vote of the
    final particles. A seed fixes the engine's samples and the resampling alike."""

    name: str = "particles"
    options_model: type[StrategyOptions] | None = ParticlesOptions

    async def run(self, job: Job, engine: Engine, hooks: Hooks) -> Decided:
        opts = job.options.of(ParticlesOptions)
        rng = np.random.default_rng(None if job.params.seed is None else [job.params.seed, 0x5EA])
        search, started = Search(job, engine, hooks, opts), time.perf_counter()
        root = search.tree.root()
        particles = [root] * job.samples
        weights = [1.0 / job.samples] * job.samples
        async with engine.session() as session:
            for step in range(opts.max_steps):
                if all(p.finished for p in particles):
                    break
                counts: dict[int, tuple[Node, int]] = {}
                for p in particles:
                    if not p.finished:
                        node, k = counts.get(p.id, (p, 0))
                        counts[p.id] = (node, k + 1)
                children = await search.expand(session, list(counts.values()), step)
                fresh = {
                    node.id: iter(group)
                    for (node, _), group in zip(counts.values(), children, strict=True)
                }
                particles = [p if p.finished else next(fresh[p.id]) for p in particles]
                weights = softmax(
                    [log_weight(p.score, opts.scorer) for p in particles], opts.temperature
                )
                if len(particles) == 1:
                    search.show(particles[0])
                last = all(p.finished for p in particles) or step + 1 == opts.max_steps
                if last:  # nothing left to resample for
                    search.record(step, particles, weight=weights)
                else:
                    drawn = resample(weights, job.samples, rng)
                    copies = [drawn.count(i) for i in range(len(particles))]
                    search.record(step, particles, weight=weights, copies=copies)
                    particles = [particles[i] for i in drawn]
                search.progress(step + 1)
                if last:
                    break
        for p in particles:
            if not p.finished:
                p.finish = "length"
        search.progress(opts.max_steps)
        finals, mass = _distinct(particles, weights)
        gen, notes, usage = search.result(finals, started)
        t0 = time.perf_counter()
        decision = await asyncio.to_thread(weighted_vote, self.name, gen.samples, job.options, mass)
        decision.scores["score"] = [n.score for n in finals]
        decision.scores["copies"] = [float(sum(p is n for p in particles)) for n in finals]
        decision.notes = {**decision.notes, "search": notes}
        decision.usage = usage
        return Decided(gen, decision, time.perf_counter() - t0)


def _distinct(
    particles: Sequence[Node], weights: Sequence[float]
) -> tuple[list[Node], list[float]]:
    """The distinct partial solutions among the particles, with the sum of their copies'
    weights."""
    finals: list[Node] = []
    mass: list[float] = []
    where: dict[int, int] = {}
    for p, w in zip(particles, weights, strict=True):
        if p.id not in where:
            where[p.id] = len(finals)
            finals.append(p)
            mass.append(0.0)
        mass[where[p.id]] += w
    return finals, mass


BEAM = Beam()
PARTICLES = Particles()
