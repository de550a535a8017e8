"""The data that crosses every layer: sampling parameters, samples, generations, and the
engine protocol they travel through (docs/architecture.md, "ground floor").

Imports nothing of Ponder, so every layer (strategies, engines, the runner, the API) can.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SamplingParams:
    """Per-sample decoding parameters. `temperature == 0` means greedy."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0
    stop_entropy: float | None = None
    """Finish a sample, without sampling, at the first position whose processed entropy is at
    least this (finish_reason "entropy"; the entropy is in `Sample.next_entropy`)."""
    punct_stop: bool = False
    """Finish right after the first token whose id is one of the PUNCTUATION ids
    (`punctuation_ids`; finish_reason "punct")."""
    prompt_logprobs: int | None = None
    """Also score the prompt: each prompt token's raw logprob given the tokens before it, with
    the top-k alternatives for this k (0 = the token's own only). `Generation.prompt_logprobs`."""
    confidence_top_k: int = 0
    """Also record DeepConf's per-token confidence (`Sample.confidence`): minus the mean raw
    logprob of the row's k most probable tokens, for this k (0 = not recorded)."""
    json_schema: str | None = None
    """Structured output: every sample is JSON valid against this schema (JSON text; a bare
    `{"type": "object"}` for `json_object`). Engines constrain their processed distribution
    with it (docs/api.md, "Structured outputs")."""
    grammar: str | None = None
    """Structured output as a Lark grammar in llguidance's dialect (JSON schemas embedded
    with `%json`): a chat template's own tool-call form, such as `<tool_call>{...}
    </tool_call>` (api/tools.py). At most one of `json_schema` and `grammar`."""
    min_tokens: int = 0
    """No end of generation and no stop string before this many tokens (vLLM's `min_tokens`:
    end-of-generation tokens are masked out of the processed distribution until then)."""
    ignore_eos: bool = False
    """Generate past end-of-generation tokens, to max_tokens (vLLM's `ignore_eos`, which
    load-testing tools send)."""
    stop_confidence: tuple[int, float] | None = None
    """(window, threshold): finish a sample (finish_reason "confidence") as soon as the mean
    confidence of its last `window` tokens falls below the threshold (DeepConf online; needs
    `confidence_top_k`). The token that completes the failing window is kept."""


APPROXIMATED = frozenset({"kl_uniform", "logprob_processed", "entropy_processed"})
"""Per-token stats an engine without exact stats approximates from top-k logprobs (then
`Generation.exact` is false); the sampled token's raw `logprob` is always exact."""


def confidence_stop(confidence: npt.ArrayLike, window: int, threshold: float) -> int | None:
    """Where `SamplingParams.stop_confidence` stops a sample with these per-token confidences:
    the number of tokens kept (the first full window whose mean is below the threshold ends
    with the last kept token), or None when no window falls below it."""
    c = np.asarray(confidence, dtype=np.float64)
    if window <= 0 or c.size < window:
        return None
    sums = np.convolve(c, np.ones(window), mode="valid")  # sums[i] = c[i : i + window].sum()
    low = np.nonzero(sums < threshold * window)[0]
    return int(low[0]) + window if low.size else None


PUNCTUATION = ".,\n?!:;)]}"
"""CNTP's trial boundaries (docs/strategies.md section 5)."""


@dataclass
class Sample:
    """One generated completion with its per-token statistics (docs/strategies.md table).

    `token_ids` and every stats array have one entry per generated token, the end-of-sequence
    token included when one was generated (it is a token the model chose and paid for).
    """

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str
    logprob: FloatArray
    kl_uniform: FloatArray
    logprob_processed: FloatArray
    entropy_processed: FloatArray
    top_logprobs: list[list[tuple[str, float]]] | None = None
    tokens_text: list[str] = field(default_factory=list)
    next_entropy: float | None = None
    confidence: FloatArray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    """DeepConf's per-token confidence (`SamplingParams.confidence_top_k`); empty when not asked."""

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    def head(
        self, j: int, finish_reason: str, text: str, next_entropy: float | None = None
    ) -> Sample:
        """The sample's first j tokens with their stats (a stop rule applied after the fact),
        ending for `finish_reason`, with `text` as its text."""
        return Sample(
            index=self.index,
            text=text,
            token_ids=self.token_ids[:j],
            finish_reason=finish_reason,
            logprob=self.logprob[:j],
            kl_uniform=self.kl_uniform[:j],
            logprob_processed=self.logprob_processed[:j],
            entropy_processed=self.entropy_processed[:j],
            top_logprobs=self.top_logprobs[:j] if self.top_logprobs else self.top_logprobs,
            tokens_text=self.tokens_text[:j],
            next_entropy=next_entropy,
            confidence=self.confidence[:j],
        )

    @property
    def mean_logprob(self) -> float:
        """Mean raw token logprob; 0.0 for an empty sample."""
        return float(np.mean(self.logprob, dtype=np.float64)) if len(self.logprob) else 0.0

    @property
    def self_certainty(self) -> float:
        """Mean KL(U || p) over the sample's tokens (Kang et al. 2025)."""
        return float(np.mean(self.kl_uniform, dtype=np.float64)) if len(self.kl_uniform) else 0.0


@dataclass
class PromptLogprobs:
    """The prompt's own tokens scored by the model (`SamplingParams.prompt_logprobs`): entry i
    is token i's raw logprob given tokens 0..i-1; the first token has none (nothing before
    it), as in OpenAI's `echo` and vLLM's `prompt_logprobs`."""

    tokens_text: list[str]
    logprob: list[float | None]
    top: list[list[tuple[str, float]] | None]


@dataclass
class Generation:
    """The result of one `Engine.sample` call."""

    samples: list[Sample]
    prompt_tokens: int
    queue_s: float
    generate_s: float
    unused_tokens: int = 0
    """Tokens generated but in no returned sample (CNTP's losing trials); they count in usage."""
    exact: bool = True
    """False when a per-token stat had to be approximated (e.g. from top-k logprobs)."""
    prompt_logprobs: PromptLogprobs | None = None
    prefill_s: float = 0.0
    """Of `generate_s`, the seconds until the prompt was in the KV cache (the llama.cpp
    engine says; 0: the engine does not). Traces split a call into prefill and decode."""
    followup_prompt_tokens: int = 0
    """Prompt tokens of the calls a strategy made after its samples (usc, aggregate, verify;
    an external verifier's included): counted in `usage.prompt_tokens`."""

    @property
    def completion_tokens(self) -> int:
        """Every generated token: of every sample, and of CNTP's losing trials."""
        return sum(s.n_tokens for s in self.samples) + self.unused_tokens


ProgressCallback = Callable[[int, int], None]
"""Called from the engine as `(finished_samples, total_samples)`; must be thread-safe."""

ENGINE_WAIT: ContextVar[Callable[[float], None] | None] = ContextVar(
    "ponder_engine_wait", default=None
)
"""Set by the HTTP layer around a request's run; an engine that queues requests itself (the
llama.cpp batcher) calls it, on the event loop, with the seconds a call waited before it was
admitted: a request whose deadline passes before that never started (503, not 504)."""

PHASE: ContextVar[str] = ContextVar("ponder_phase", default="samples")
"""What the engine calls made now are for, as a strategy says it (`phase`): "samples",
"wave" (adaptive stopping), "cntp", "followup" (usc, aggregate, verify, a search's
verifier), "search.step". Traces name engine calls by it (ponder/tracing.py)."""


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Engine calls inside are for `name` (`PHASE`)."""
    token = PHASE.set(name)
    try:
        yield
    finally:
        PHASE.reset(token)


SampleCallback = Callable[["Sample"], bool]
"""Called from the engine (its thread) with each sample as it finishes; returning True ends
the call: samples still running stop where they are (finish_reason "cancelled"; their tokens
were generated and stay in the returned samples). Engines that cannot stop a call midway do
not call it (an HTTP upstream): the caller checks its rule on the returned samples as well."""


@dataclass
class StreamDelta:
    """A piece of text of a streamed single sample; the last event carries the `Sample`."""

    text: str
    sample: Sample | None = None
    prompt_tokens: int = 0


class Sampler(Protocol):
    """Something that draws samples: an engine, or a session on one."""

    async def sample(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        samples: int,
        on_progress: ProgressCallback | None = None,
        on_sample: SampleCallback | None = None,
    ) -> Generation: ...


class Session(Sampler, Protocol):
    """Calls on one engine that extend one another's prefixes (`Engine.session`)."""

    async def sample_many(
        self, requests: list[tuple[list[int], SamplingParams, int]]
    ) -> list[Generation]:
        """Several prompts' samples (prompt, params, samples) in one call: an engine that
        batches them (`Engine.lockstep` > 1) decodes them in the same steps; another runs
        them as concurrent calls."""


class Engine(Protocol):
    """What every engine offers. All methods that generate are async and never block the loop."""

    model_name: str
    exact_stats: bool
    continues_chat: bool
    """Whether a chat prompt can be extended with generated tokens (CNTP on chat requests)."""
    keeps_stop_tokens: bool
    """Whether a sample that a stop string ended keeps, in `token_ids`, the token that
    completed the stop string (llama.cpp, vLLM: its text is cut, its tokens are not); an
    HTTP upstream returns only the tokens before it, so a caller that continues the sample
    (step-level search) cannot know the stop string from its tokens."""
    reports_admission: bool
    """Whether it queues requests itself and reports their admission (`ENGINE_WAIT`): a
    request past its deadline that was never admitted then gets 503, not 504."""
    n_vocab: int

    @property
    def lockstep(self) -> int:
        """How many samples a session's `sample_many` decodes in the same steps (llama.cpp:
        its max_samples): CNTP runs its decodes in groups that fill it. 1: batching prompts
        gains nothing, and CNTP drives each decode alone."""

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template prompts are rendered with (PONDER_CHAT_TEMPLATE, else the
        model's own); None when the engine renders none (upstream)."""

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """Token ids of the chat prompt, rendered by the chat template; `tools` (OpenAI's
        function tools) are given to the template, for a template that describes them in
        its own format (api/tools.py)."""

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of raw text (a completion prompt, `/tokenize`): special tokens written in
        it are parsed, as vLLM and llama.cpp's server do; `add_special` adds the model's BOS
        where it wants one."""

    def tokenizer_info(self) -> dict[str, Any]:
        """`/tokenizer_info`: bos/eos/pad tokens, chat template, lengths. Raises
        `UnsupportedRequest` when the engine has no tokenizer of its own."""

    async def start(self) -> None:
        """Load the model and generate one token; afterwards `ready` is true."""

    @property
    def ready(self) -> bool: ...

    @property
    def in_flight(self) -> int:
        """Requests inside the engine, running or waiting."""

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the engine."""

    def check_fits(self, prompt_tokens: int, max_tokens: int, samples: int) -> None:
        """Raise `RequestTooLarge` when that many samples of max_tokens after the prompt do
        not fit."""

    def default_max_tokens(self, prompt_tokens: int, samples: int) -> int:
        """The per-sample budget used when a request does not set one."""

    async def sample(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        samples: int,
        on_progress: ProgressCallback | None = None,
        on_sample: SampleCallback | None = None,
    ) -> Generation:
        """`samples` samples of the prompt, in one batch; sample i is seeded with seed + i."""

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator[StreamDelta]:
        """One sample, yielded as text deltas as it is produced; the last delta has the sample."""

    def session(self) -> AbstractAsyncContextManager[Session]:
        """Exclusive use of the engine for a series of calls that extend one another's prefixes
        (CNTP); the engine may reuse its cache between them."""

    def detokenize(self, token_ids: list[int], special: bool = False) -> str:
        """Text of token ids; special tokens render as nothing unless `special`."""

    async def close(self) -> None:
        """Free native resources."""
