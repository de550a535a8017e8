"""What the batcher keeps per request and per sequence: `Request` (its phase, its held ids,
its prompt's progress), `Seq` (one sample being decoded), `Cached` (a finished sequence kept
for prefix reuse). Plain data and small helpers; the batcher (batcher.py) moves them."""

from __future__ import annotations

import codecs
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..stops import StopMatcher
from ..types import (
    Generation,
    ProgressCallback,
    PromptLogprobs,
    Sample,
    SampleCallback,
    SamplingParams,
)
from .context import Model
from .stats import RowStats, top_logprobs

DeltaCallback = Callable[[str], None]


def seed_of(seed: int | None, i: int) -> int | None:
    """Sample i's seed (seed + i), folded into numpy's non-negative range."""
    return None if seed is None else (seed + i) % 2**64


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Seq:
    """Bookkeeping of one sequence being decoded."""

    __slots__ = (
        "conf",
        "conf_window",
        "decoder",
        "emitted",
        "ent",
        "finish",
        "index",
        "kl",
        "lp",
        "lpp",
        "matcher",
        "next_entropy",
        "pieces",
        "rng",
        "row",
        "seq",
        "stops",
        "text",
        "tokens",
        "top",
    )

    def __init__(
        self, rng: np.random.Generator, seq: int, index: int, stops: tuple[str, ...] = ()
    ) -> None:
        self.rng = rng
        self.stops = StopMatcher(stops) if stops else None
        self.seq = seq
        self.index = index
        self.tokens: list[int] = []
        self.lp: list[float] = []
        self.kl: list[float] = []
        self.lpp: list[float] = []
        self.ent: list[float] = []
        self.conf: list[float] = []
        self.conf_window = 0.0
        self.top: list[list[tuple[str, float]]] = []
        self.pieces: list[str] = []
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.emitted = 0
        self.finish: str | None = None
        self.row: np.ndarray | None = None
        """The logits row after the sequence's last decoded token; None while its last sampled
        token waits to be decoded."""
        self.next_entropy: float | None = None
        self.matcher: Any = None
        """llguidance's matcher of its structured output (None: unconstrained)."""

    def decoded(self) -> list[int]:
        """Generated tokens whose KV is in the cache (a final sampled token never is)."""
        return self.tokens if self.finish in ("entropy", None) else self.tokens[:-1]

    def end(self, reason: str) -> None:
        self.text += self.decoder.decode(b"", final=True)
        self.finish = reason

    def to_sample(self, with_top: bool) -> Sample:
        return Sample(
            index=self.index,
            text=self.text,
            token_ids=self.tokens,
            finish_reason=self.finish or "cancelled",
            logprob=np.asarray(self.lp, dtype=np.float32),
            kl_uniform=np.asarray(self.kl, dtype=np.float32),
            logprob_processed=np.asarray(self.lpp, dtype=np.float32),
            entropy_processed=np.asarray(self.ent, dtype=np.float32),
            top_logprobs=self.top if with_top else None,
            tokens_text=self.pieces,
            next_entropy=self.next_entropy,
            confidence=np.asarray(self.conf, dtype=np.float32),
        )


@dataclasses.dataclass
class Cached:
    """A finished sequence kept for prefix reuse: its tokens (prompt + decoded), the logits
    row after them, how many are its request's prompt, and whether that prompt's KV is what
    a fresh prefill computes (a request that was not a session's continuation)."""

    tokens: list[int]
    row: np.ndarray | None
    prompt_len: int
    canonical: bool


@dataclasses.dataclass
class Request:
    """One call's samples of one prompt, from submission to its Generation."""

    prompt_ids: list[int]
    params: SamplingParams
    samples: int
    on_progress: ProgressCallback | None = None
    on_delta: DeltaCallback | None = None
    on_sample: SampleCallback | None = None
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    submitted: float = dataclasses.field(default_factory=time.perf_counter)
    admitted: float = 0.0
    prefilled: float = 0.0
    """When its prompt was all in the KV cache (its last logits row known)."""
    seqs: list[Seq] = dataclasses.field(default_factory=list)
    """The samples started so far, in sample order."""
    base: int = -1
    """The sequence id holding the prompt's KV (held until the request leaves: later parts
    of its samples copy the prompt from it)."""
    held: list[int] = dataclasses.field(default_factory=list)
    """Sequence ids the request holds: `base`, then its running samples' other ids."""
    todo: list[int] = dataclasses.field(default_factory=list)
    """Prompt tokens still to prefill (on `base`), from position `done`."""
    done: int = 0
    scores: list[tuple[float, list[tuple[int, float]]]] | None = None
    """The prompt's scores (`params.prompt_logprobs`), filled by the prefill."""
    finished: int = 0
    turn: int = 0
    """Where the round robin over its live samples starts next step (when it has more live
    samples than its share of rows)."""
    enough: bool = False
    """Set by `on_sample` (in the grader pool): stop its running samples, start no more."""
    failed: BaseException | None = None
    """Set when `on_sample` raised: the request fails, the others go on."""
    grading: int = 0
    """`on_sample` calls submitted and not yet returned (changed under the batcher's lock)."""
    resolve: Callable[[Generation | BaseException], None] | None = None
    on_admitted: Callable[[float], None] | None = None
    """Told (from the batcher thread) how long the request waited for the engine."""
    prompt_row: np.ndarray | None = None
    """The logits row after the whole prompt (once prefilled): every sample starts from it,
    and a request with the same prompt copies its KV and prefills nothing."""
    matchers: list[Any] | None = None
    """One grammar matcher per sample, compiled before submission (`json_schema`)."""
    fresh: bool = True
    """Not a continuation of a session: when it finds the engine idle, it starts from a
    clean KV cache, and it reuses only what a fresh prefill computes identically."""

    ended: bool = False
    """Its Generation or error was handed back."""

    @property
    def phase(self) -> str:
        """waiting -> prefilling -> decoding -> finished."""
        if self.ended:
            return "finished"
        if not self.held:
            return "waiting"
        if self.prompt_row is None:
            return "prefilling"
        return "decoding"

    @property
    def pending(self) -> int:
        """Samples not started yet."""
        return 0 if self.enough else self.samples - len(self.seqs)

    def live(self) -> list[Seq]:
        return [s for s in self.seqs if s.finish is None]

    @property
    def budget(self) -> int:
        """KV cells it may need: the prompt once + every sample it holds an id for."""
        return len(self.prompt_ids) + max(len(self.held), 1) * self.params.max_tokens

    def prompt_logprobs(self, text: Callable[[int], str]) -> PromptLogprobs | None:
        if self.scores is None:
            return None
        ids = self.prompt_ids
        return PromptLogprobs(
            tokens_text=[text(t) for t in ids],
            logprob=[None] + [lp for lp, _ in self.scores],
            top=[None] + [[(text(t), v) for t, v in top] for _, top in self.scores],
        )


@dataclasses.dataclass
class StepPlan:
    """One step, as the scheduler planned it: the (token, position, sequence) decode rows and
    whose sample each row is, and the request whose prompt's next chunk is prefilled."""

    rows: list[tuple[int, int, int]]
    owners: list[tuple[Request, Seq]]
    filling: Request | None

    @property
    def empty(self) -> bool:
        return not self.rows and self.filling is None


def confident(s: Seq, c: float, params: SamplingParams) -> None:
    """Record a token's DeepConf confidence; finish the sequence when the mean of its last
    `window` confidences falls below the threshold (`SamplingParams.stop_confidence`)."""
    s.conf.append(c)
    if params.stop_confidence is None:
        return
    window, threshold = params.stop_confidence
    s.conf_window += c
    if len(s.conf) > window:
        s.conf_window -= s.conf[-window - 1]
    if s.finish is None and len(s.conf) >= window and s.conf_window < threshold * window:
        s.end("confidence")


def accept(model: Model, s: Seq, st: RowStats, r: int, params: SamplingParams, eog: bool) -> None:
    """Append row r's sampled token to sequence s (its stats, top logprobs, text) and decide
    whether s is finished (end of generation, a stop string, punctuation, length)."""
    tok = int(st.token[r])
    s.tokens.append(tok)
    if s.matcher is not None:
        s.matcher.consume_token(tok)
    s.lp.append(float(st.logprob[r]))
    s.kl.append(float(st.kl_uniform[r]))
    s.lpp.append(float(st.logprob_processed[r]))
    s.ent.append(float(st.entropy_processed[r]))
    if params.top_logprobs > 0:
        assert s.row is not None
        top = top_logprobs(s.row, float(st.lse[r]), params.top_logprobs)
        s.top.append([(model.text(t), lp) for t, lp in top])
    if eog and not params.ignore_eos:
        s.pieces.append("")
        s.end("stop")
        return
    s.pieces.append("" if eog else model.text(tok))
    added = "" if eog else s.decoder.decode(model.piece(tok))
    s.text += added
    cut = s.stops.feed(added) if s.stops is not None else -1
    if cut != -1 and len(s.tokens) > params.min_tokens:  # (vLLM: none before min_tokens)
        s.text = s.text[:cut]
        s.finish = "stop"
        return
    if s.matcher is not None and s.matcher.is_stopped():  # the structured output is complete
        s.end("stop")
    elif params.punct_stop and tok in model.punct:
        s.end("punct")
    elif len(s.tokens) >= params.max_tokens:
        s.end("length")
