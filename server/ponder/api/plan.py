"""Turn an OpenAI request + `ponder` object into one validated Plan: the runner's `Job` plus
how to reply. All input checks live here; none of them names a strategy (each strategy's
kind and defaults come from its object in the registry)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..answers import AnswerSpec, pattern_workers
from ..config import Settings
from ..strategies import (
    REGISTRY,
    STRATEGIES,
    Job,
    SelectOptions,
    Strategy,
)
from ..types import Engine, SamplingParams
from .checks import refuse_unsupported, stops
from .errors import ApiError
from .schemas import ChatCompletionRequest, ChatMessage, CompletionRequest


@dataclass(frozen=True)
class Plan:
    """Everything a request asks for, checked: the job to run and how to reply."""

    kind: Literal["chat", "completion"]
    model: str
    job: Job
    include_candidates: bool
    stream: bool
    include_usage: bool
    notes: tuple[tuple[str, str], ...] = ()
    """Said in the response's `ponder.notes` (e.g. why fewer samples were drawn)."""
    echo_text: str | None = None
    """`echo` on /v1/completions: the prompt text each choice's text starts with."""
    ignored: tuple[str, ...] = ()
    """Request fields no OpenAI-compatible server defines (another tool's own, such as
    optillm's `optillm_approach`): accepted, and named in the `X-Ponder-Ignored-Fields`
    response header and the log."""

    @property
    def strategy(self) -> str:
        return self.job.strategy

    @property
    def samples(self) -> int:
        return self.job.samples

    @property
    def n(self) -> int:
        """OpenAI's `n`: choices returned."""
        return self.job.choices

    @property
    def logprobs(self) -> int | None:
        return self.job.logprobs


def parse_model(name: str, served: str) -> tuple[str | None, int | None]:
    """Split `model[+strategy[@N]]`; 404 for another model or an unknown strategy."""
    base, plus, rest = name.partition("+")
    if base != served:
        raise ApiError(
            404,
            f"model '{name}' does not exist; this server serves '{served}' "
            f"(and aliases '{served}+<strategy>[@N]', see /v1/models)",
            param="model",
            code="model_not_found",
        )
    if not plus:
        return None, None
    strategy, at, count = rest.partition("@")
    if strategy not in STRATEGIES:
        raise ApiError(
            404,
            f"unknown strategy '{strategy}' in model alias; available: {', '.join(STRATEGIES)}",
            param="model",
            code="strategy_not_found",
        )
    if not at:
        return strategy, None
    if not count.isdigit() or int(count) < 1:
        raise ApiError(
            400,
            f"'@{count}' in model alias is not a positive sample count",
            param="model",
            code="invalid_value",
        )
    return strategy, int(count)


def _message_text(msg: ChatMessage, index: int) -> str:
    if msg.content is None or isinstance(msg.content, str):
        return msg.content or ""
    parts = []
    for part in msg.content:
        if part.type != "text" or part.text is None:
            raise ApiError(
                400,
                f"content part type '{part.type}' is not supported (text only)",
                param=f"messages.{index}.content",
                code="unsupported_content",
            )
        parts.append(part.text)
    return "".join(parts)


def prompt_token_ids(req: ChatCompletionRequest | CompletionRequest, engine: Engine) -> list[int]:
    if isinstance(req, ChatCompletionRequest):
        messages = [
            {"role": m.role, "content": _message_text(m, i)} for i, m in enumerate(req.messages)
        ]
        return engine.render_chat(messages)
    prompt: Any = req.prompt
    if isinstance(prompt, list) and not prompt:
        raise ApiError(400, "prompt must not be empty", param="prompt", code="invalid_value")
    if isinstance(prompt, list) and all(isinstance(p, list) for p in prompt):
        if len(prompt) != 1:
            raise ApiError(
                400,
                "exactly one prompt per request is supported (got a batch of "
                f"{len(prompt)} token lists)",
                param="prompt",
                code="invalid_value",
            )
        prompt = prompt[0]
        if not prompt:
            raise ApiError(400, "prompt must not be empty", param="prompt", code="invalid_value")
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        ids = [int(t) for t in prompt]
        if any(t < 0 or t >= engine.n_vocab for t in ids):
            raise ApiError(
                400,
                f"token ids must be in [0, {engine.n_vocab})",
                param="prompt",
                code="invalid_value",
            )
        return ids
    if isinstance(prompt, list) and len(prompt) != 1:
        raise ApiError(
            400,
            "exactly one prompt per request is supported",
            param="prompt",
            code="invalid_value",
        )
    text = prompt[0] if isinstance(prompt, list) else prompt
    if not isinstance(text, str) or not text:
        raise ApiError(
            400, "prompt must be a non-empty string", param="prompt", code="invalid_value"
        )
    return engine.tokenize(text)


@dataclass(frozen=True)
class Request:
    """What a request asks for, checked before its prompt is rendered (`check_request`)."""

    strategy: Strategy
    samples: int
    options: SelectOptions
    notes: tuple[tuple[str, str], ...]
    ignored: tuple[str, ...]


def check_request(
    req: ChatCompletionRequest | CompletionRequest,
    settings: Settings,
    model_name: str,
    continues_chat: bool = True,
) -> Request:
    """Every check that needs no tokenizer: fields, model and strategy, sample counts,
    options, the caller's pattern and an explicit max_tokens. `ponder ask` runs it before
    loading the model; `build_plan` runs it first."""
    ignored = refuse_unsupported(req)
    strategy, alias_samples = _strategy(req, settings, model_name, continues_chat)
    samples, notes = _samples(req, settings, strategy, alias_samples)
    options = _options(req, strategy)
    _check_adaptive(options, strategy, samples)
    _check_options(req, options, strategy, samples)
    max_tokens = _max_tokens(req)
    if max_tokens is not None:
        _check_budget(settings, samples, max_tokens)
    return Request(strategy, samples, options, notes, ignored)


def _strategy(
    req: ChatCompletionRequest | CompletionRequest,
    settings: Settings,
    model_name: str,
    continues_chat: bool,
) -> tuple[Strategy, int | None]:
    """The strategy (request, then model alias, then server default) and the alias's @N."""
    alias_strategy, alias_samples = parse_model(req.model, model_name)
    ponder = req.ponder
    name = (ponder and ponder.strategy) or alias_strategy or settings.default_strategy
    strategy = REGISTRY.get(name)
    if strategy is None:
        raise ApiError(
            404,
            f"unknown strategy '{name}'; available: {', '.join(STRATEGIES)}",
            param="ponder.strategy",
            code="strategy_not_found",
        )
    decodes = strategy.kind == "decode"
    if decodes and isinstance(req, ChatCompletionRequest) and not continues_chat:
        raise ApiError(
            400,
            f"strategy '{name}' needs to continue a partial answer, which "
            "this engine cannot do for a chat turn; send the prompt (with your chat "
            "template) to /v1/completions",
            param="ponder.strategy",
            code="unsupported_strategy",
        )
    return strategy, alias_samples


def _samples(
    req: ChatCompletionRequest | CompletionRequest,
    settings: Settings,
    strategy: Strategy,
    alias_samples: int | None,
) -> tuple[int, tuple[tuple[str, str], ...]]:
    """How many samples to draw, and a note when it is fewer than asked."""
    ponder = req.ponder
    asked = ponder.samples if ponder and ponder.samples is not None else None
    if strategy.kind == "plain":
        if asked is not None and asked != req.n:
            raise ApiError(
                400,
                "ponder.samples applies to selection strategies; with strategy 'none' use n",
                param="ponder.samples",
                code="invalid_value",
            )
        samples = req.n
    else:
        default = strategy.default_samples or settings.default_samples
        samples = asked or alias_samples or default
        if req.n > samples:
            raise ApiError(
                400,
                f"n ({req.n}) cannot exceed ponder.samples ({samples})",
                param="n",
                code="invalid_value",
            )
    notes: tuple[tuple[str, str], ...] = ()
    if strategy.kind == "select" and req.temperature == 0 and samples > 1:
        # Greedy samples are all the same sample: N of them would cost N times as much and
        # report confidence 1.0 whatever the answer. One is drawn, and the response says so.
        notes = (("temperature", f"temperature 0 is greedy: 1 sample drawn, not {samples}"),)
        samples = 1
    if samples > settings.max_samples:
        raise ApiError(
            400,
            f"samples ({samples}) exceeds this server's max_samples ({settings.max_samples})",
            param="ponder.samples",
            code="invalid_value",
        )
    return samples, notes


def _options(req: ChatCompletionRequest | CompletionRequest, strategy: Strategy) -> SelectOptions:
    """The `ponder` object's options for this strategy (its own block is already an
    instance of its options model, validated with the request); a regex answer's pattern is compiled
    here (in a pattern worker process, never in the server), so a bad one is a 400 before
    anything is generated."""
    ponder = req.ponder
    if ponder is None:
        return SelectOptions()
    answer = AnswerSpec(ponder.answer.format, ponder.answer.pattern)
    if answer.format == "regex":
        if not answer.pattern:
            raise ApiError(
                400,
                "answer.format 'regex' needs answer.pattern",
                param="ponder.answer.pattern",
                code="invalid_value",
            )
        pattern_workers().check(answer.pattern)  # compiled in a worker process, bounded
    key = strategy.options_key
    own = getattr(ponder, key, None) if key else None
    return SelectOptions(answer=answer, own=own, adaptive=ponder.adaptive)


def _check_adaptive(options: SelectOptions, strategy: Strategy, samples: int) -> None:
    """Adaptive stopping needs a voting strategy (selection, or CNTP + vote) and room for a
    window."""
    adaptive = options.adaptive
    if adaptive is None:
        return
    if strategy.kind == "plain":
        raise ApiError(
            400,
            f"ponder.adaptive applies to the voting strategies; '{strategy.name}' is not one",
            param="ponder.adaptive",
            code="unsupported_parameter",
        )
    if adaptive.method == "window" and adaptive.window > samples > 1:  # 1: temperature 0
        raise ApiError(
            400,
            f"ponder.adaptive.window ({adaptive.window}) exceeds samples ({samples}): the rule "
            "could never fire",
            param="ponder.adaptive.window",
            code="invalid_value",
        )


def _check_options(
    req: ChatCompletionRequest | CompletionRequest,
    options: SelectOptions,
    strategy: Strategy,
    samples: int,
) -> None:
    """A strategy's own options block (`ponder.rpc`, `ponder.cntp`, ...) given with another
    strategy is refused, not ignored; then the strategy checks its settings."""
    owners = {s.options_key: s.name for s in REGISTRY.values() if s.options_key}
    given = req.ponder.model_fields_set if req.ponder is not None else set()
    for key, owner in owners.items():
        if key in given and key != strategy.options_key:
            raise ApiError(
                400,
                f"ponder.{key} applies to strategy '{owner}', not '{strategy.name}'",
                param=f"ponder.{key}",
                code="unsupported_parameter",
            )
    strategy.check(options, samples)


def _max_tokens(req: ChatCompletionRequest | CompletionRequest) -> int | None:
    if isinstance(req, ChatCompletionRequest):
        return req.max_completion_tokens or req.max_tokens
    return req.max_tokens


def _logprobs(req: ChatCompletionRequest | CompletionRequest) -> int | None:
    """Top-k logprobs per token, or None when the response carries no logprobs."""
    if isinstance(req, ChatCompletionRequest):
        return (req.top_logprobs or 0) if req.logprobs else None
    return req.logprobs


def _check_budget(settings: Settings, samples: int, max_tokens: int) -> None:
    if max_tokens > settings.max_tokens_limit:
        raise ApiError(
            400,
            f"max_tokens ({max_tokens}) exceeds this server's limit of {settings.max_tokens_limit}",
            param="max_tokens",
            code="invalid_value",
        )
    if samples * max_tokens > settings.max_request_tokens:
        raise ApiError(
            400,
            f"samples x max_tokens = {samples * max_tokens} exceeds this "
            f"server's limit of {settings.max_request_tokens} generated tokens per "
            "request",
            param="max_tokens",
            code="request_too_large",
        )


def build_plan(
    req: ChatCompletionRequest | CompletionRequest, settings: Settings, engine: Engine
) -> Plan:
    """The request checked (`check_request`), its prompt rendered and tokenized, and its
    lengths checked against the server's limits and the engine's context."""
    checked = check_request(req, settings, engine.model_name, engine.continues_chat)
    strategy, samples = checked.strategy, checked.samples
    logprobs = _logprobs(req)
    scoring = isinstance(req, CompletionRequest) and req.echo and logprobs is not None
    if scoring and strategy.kind == "decode":
        raise ApiError(
            400,
            f"echo with logprobs (prompt scoring) is not supported with strategy "
            f"'{strategy.name}'; score prompts with strategy 'none'",
            param="echo",
            code="unsupported_parameter",
        )
    prompt_ids = _checked_prompt(req, settings, engine)
    max_tokens = _max_tokens(req) or min(
        settings.default_max_tokens, engine.default_max_tokens(len(prompt_ids), samples)
    )
    _check_budget(settings, samples, max_tokens)
    engine.check_fits(len(prompt_ids), max_tokens, samples)
    default_t = settings.selection_temperature if strategy.kind != "plain" else 1.0
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=default_t if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=max(0, req.top_k or 0),
        min_p=req.min_p or 0.0,
        seed=req.seed,
        stop=stops(req.stop),
        top_logprobs=logprobs or 0,
        prompt_logprobs=logprobs if scoring else None,
    )
    include_candidates = bool(req.ponder and req.ponder.include_candidates)
    job = Job(
        strategy=strategy.name,
        prompt_ids=prompt_ids,
        params=params,
        samples=samples,
        choices=req.n,
        options=checked.options,
        logprobs=logprobs,
        details=include_candidates,
    )
    return Plan(
        kind="chat" if isinstance(req, ChatCompletionRequest) else "completion",
        model=req.model,
        job=job,
        include_candidates=include_candidates,
        stream=req.stream,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        notes=checked.notes,
        echo_text=_echo_text(req, prompt_ids, engine),
        ignored=checked.ignored,
    )


def _checked_prompt(
    req: ChatCompletionRequest | CompletionRequest, settings: Settings, engine: Engine
) -> list[int]:
    """The prompt's token ids, at most PONDER_MAX_PROMPT_TOKENS of them."""
    prompt_ids = prompt_token_ids(req, engine)
    if len(prompt_ids) > settings.max_prompt_tokens:
        raise ApiError(
            400,
            f"the prompt has {len(prompt_ids)} tokens; this server accepts at "
            f"most {settings.max_prompt_tokens}",
            param="messages" if isinstance(req, ChatCompletionRequest) else "prompt",
            code="prompt_too_long",
        )
    return prompt_ids


def _echo_text(
    req: ChatCompletionRequest | CompletionRequest, prompt_ids: list[int], engine: Engine
) -> str | None:
    """The prompt as it is echoed: the caller's text, or token ids' text (special tokens
    shown, so the echo is what the model read)."""
    if not isinstance(req, CompletionRequest) or not req.echo:
        return None
    prompt: Any = req.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) else engine.detokenize(prompt_ids, special=True)
