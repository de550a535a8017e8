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
from .aliases import Alias, defined_aliases, parse_model
from .checks import refuse_unsupported, stops
from .errors import ApiError
from .schemas import ChatCompletionRequest, ChatMessage, CompletionRequest
from .structured import constraint
from .tools import ToolPlan, history, syntax_of, tool_plan


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
    tools: ToolPlan | None = None
    """The request's tools (api/tools.py): replies that call them become `tool_calls`."""
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


_ROLES = {"developer": "system"}
"""OpenAI's `developer` role is its `system` role (o1 onward): templates know only `system`."""

PromptItem = str | list[int]
"""One prompt of a completions request: text, or token ids."""


def prompt_items(req: CompletionRequest) -> list[PromptItem]:
    """The request's prompts: one string or token list, or a batch of either (each its own
    selection, choices prompt-major as OpenAI and vLLM order them)."""
    prompt: Any = req.prompt
    if isinstance(prompt, str):
        items: list[PromptItem] = [prompt]
    elif prompt and all(isinstance(t, int) for t in prompt):
        items = [list(prompt)]
    else:
        items = list(prompt)
    if not items:
        raise ApiError(400, "prompt must not be empty", param="prompt", code="invalid_value")
    for k, item in enumerate(items):
        if not item:
            where = "prompt" if len(items) == 1 else f"prompt.{k}"
            raise ApiError(400, f"{where} must not be empty", param=where, code="invalid_value")
    return items


def prompt_token_ids(
    req: ChatCompletionRequest | CompletionRequest,
    engine: Engine,
    item: PromptItem | None = None,
    tools: ToolPlan | None = None,
) -> list[int]:
    """The token ids of a chat request's rendered messages (with its `tools` described in
    the system message), or of one completions prompt (`item`; default: the request's only
    one)."""
    if isinstance(req, ChatCompletionRequest):
        # a template with its own tool form renders the history's calls and results itself,
        # whether or not this request offers tools
        native = syntax_of(engine.chat_template) is not None
        called: dict[str, str] = {}  # earlier calls' ids → their functions
        messages = [
            history(
                _ROLES.get(m.role, m.role),
                _message_text(m, i),
                m.model_extra or {},
                f"messages.{i}",
                native,
                called,
            )
            for i, m in enumerate(req.messages)
        ]
        if tools is not None and tools.syntax is not None:  # the template's own tool form
            return _rendered(engine, messages, list(tools.tools))
        if tools is not None and tools.prompt is not None:  # the generic form
            if messages[0]["role"] == "system":
                said = messages[0]["content"] + "\n\n" + tools.prompt
                messages[0] = {"role": "system", "content": said}
            else:
                messages.insert(0, {"role": "system", "content": tools.prompt})
        return _rendered(engine, messages, None)
    if item is None:
        (item,) = prompt_items(req)
    if isinstance(item, str):
        return engine.tokenize(item)
    if any(t < 0 or t >= engine.n_vocab for t in item):
        raise ApiError(
            400, f"token ids must be in [0, {engine.n_vocab})", param="prompt", code="invalid_value"
        )
    return [int(t) for t in item]


def _rendered(
    engine: Engine, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[int]:
    """The chat template's rendering; a template that refuses the messages (its own
    `raise_exception`, or an error rendering them) is a 400 on `messages`, not a 500."""
    import jinja2

    try:
        return engine.render_chat(messages, tools)
    except (jinja2.TemplateError, ValueError, TypeError) as exc:
        raise ApiError(
            400,
            f"the model's chat template cannot render these messages: {str(exc)[:300]}",
            param="messages",
            code="invalid_value",
        ) from None


@dataclass(frozen=True)
class Request:
    """What a request asks for, checked before its prompt is rendered (`check_request`)."""

    strategy: Strategy
    samples: int
    options: SelectOptions
    notes: tuple[tuple[str, str], ...]
    ignored: tuple[str, ...]
    temperature: float | None = None
    """Set by the model alias (`:tT`): used whatever the request's temperature."""


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
    strategy, alias = _strategy(req, settings, model_name, continues_chat)
    samples, notes = _samples(req, settings, strategy, alias)
    options = _options(req, strategy)
    _check_adaptive(options, strategy, samples)
    _check_options(req, options, strategy, samples)
    max_tokens = _max_tokens(req)
    if max_tokens is not None:
        _check_budget(
            settings, samples, max_tokens, strategy.followup_tokens(options, samples, max_tokens)
        )
    return Request(strategy, samples, options, notes, ignored, alias.temperature)


def _strategy(
    req: ChatCompletionRequest | CompletionRequest,
    settings: Settings,
    model_name: str,
    continues_chat: bool,
) -> tuple[Strategy, Alias]:
    """The strategy (request, then model alias, then server default) and the alias."""
    alias = parse_model(req.model, model_name, defined_aliases(settings))
    ponder = req.ponder
    name = (ponder and ponder.strategy) or alias.strategy or settings.default_strategy
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
    return strategy, alias


def _samples(
    req: ChatCompletionRequest | CompletionRequest,
    settings: Settings,
    strategy: Strategy,
    alias: Alias,
) -> tuple[int, tuple[tuple[str, str], ...]]:
    """How many samples to draw, and a note when it is fewer than asked (or when the alias's
    temperature replaced the request's)."""
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
        samples = asked or alias.samples or default
        if req.n > samples:
            raise ApiError(
                400,
                f"n ({req.n}) cannot exceed ponder.samples ({samples})",
                param="n",
                code="invalid_value",
            )
    notes: tuple[tuple[str, str], ...] = ()
    temperature = req.temperature if alias.temperature is None else alias.temperature
    if alias.temperature is not None and req.temperature not in (None, alias.temperature):
        said = f"the model alias sets temperature {alias.temperature:g}; the request's "
        notes = (("temperature", said + f"{req.temperature:g} was not used"),)
    if strategy.kind == "select" and temperature == 0 and samples > 1:
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
    answer = AnswerSpec(
        ponder.answer.format,
        ponder.answer.pattern,
        tuple(ponder.answer.ignore_arguments),
        ponder.answer.vote,
    )
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


def _check_budget(settings: Settings, samples: int, max_tokens: int, followup: int = 0) -> None:
    """max_tokens within the server's limit, and every token the request may generate
    (samples x max_tokens, plus the most its strategy's follow-up calls may: usc's pick,
    aggregate's answer, verify's rationales and verdicts) within the per-request limit."""
    if max_tokens > settings.max_tokens_limit:
        raise ApiError(
            400,
            f"max_tokens ({max_tokens}) exceeds this server's limit of {settings.max_tokens_limit}",
            param="max_tokens",
            code="invalid_value",
        )
    if samples * max_tokens + followup > settings.max_request_tokens:
        calls = f" + {followup} for the strategy's follow-up calls" if followup else ""
        raise ApiError(
            400,
            f"samples x max_tokens = {samples * max_tokens}{calls} exceeds this "
            f"server's limit of {settings.max_request_tokens} generated tokens per "
            "request",
            param="max_tokens",
            code="request_too_large",
        )


def build_plans(
    req: ChatCompletionRequest | CompletionRequest, settings: Settings, engine: Engine
) -> list[Plan]:
    """The request checked (`check_request`), each prompt rendered and tokenized (a
    completions request may carry a batch), and the lengths checked against the server's
    limits and the engine's context: one Plan per prompt. A batch counts as one request: its
    prompts' samples together stay within PONDER_MAX_SAMPLES and PONDER_MAX_REQUEST_TOKENS."""
    checked = check_request(req, settings, engine.model_name, engine.continues_chat)
    items: list[PromptItem | None] = (
        list(prompt_items(req)) if isinstance(req, CompletionRequest) else [None]
    )
    if len(items) > 1:
        _check_batch(req, settings, checked, len(items))
    return [_plan_one(req, settings, engine, checked, item, len(items)) for item in items]


def build_plan(
    req: ChatCompletionRequest | CompletionRequest, settings: Settings, engine: Engine
) -> Plan:
    """`build_plans` for a request with one prompt (`ponder ask`)."""
    plans = build_plans(req, settings, engine)
    if len(plans) != 1:
        raise ApiError(400, "give one prompt", param="prompt", code="invalid_value")
    return plans[0]


def _check_batch(
    req: ChatCompletionRequest | CompletionRequest, settings: Settings, checked: Request, n: int
) -> None:
    """A batch of prompts: within the sample limit together; not streamed."""
    if checked.samples * n > settings.max_samples:
        raise ApiError(
            400,
            f"{n} prompts x {checked.samples} samples = {checked.samples * n} exceeds this "
            f"server's max_samples ({settings.max_samples}) per request",
            param="prompt",
            code="request_too_large",
        )
    if req.stream:
        raise ApiError(
            400,
            "streaming a batch of prompts is not supported; send one prompt per streamed "
            "request, or the batch without `stream`",
            param="stream",
            code="unsupported_parameter",
        )


def _plan_one(
    req: ChatCompletionRequest | CompletionRequest,
    settings: Settings,
    engine: Engine,
    checked: Request,
    item: PromptItem | None,
    batch: int,
) -> Plan:
    """The Plan of one prompt (`item`; None: the chat request's messages)."""
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
    tools = tool_plan(req, engine.chat_template) if isinstance(req, ChatCompletionRequest) else None
    prompt_ids = _checked_prompt(req, settings, engine, item, tools)
    max_tokens = _max_tokens(req) or min(
        settings.default_max_tokens, engine.default_max_tokens(len(prompt_ids), samples)
    )
    followup = checked.strategy.followup_tokens(checked.options, samples, max_tokens)
    _check_budget(settings, samples * batch, max_tokens, followup * batch)
    if req.min_tokens > max_tokens:
        raise ApiError(
            400,
            f"min_tokens ({req.min_tokens}) exceeds max_tokens ({max_tokens})",
            param="min_tokens",
            code="invalid_value",
        )
    engine.check_fits(len(prompt_ids), max_tokens, samples)
    schema, grammar = constraint(req, strategy, tools)
    default_t = settings.selection_temperature if strategy.kind != "plain" else 1.0
    temperature = checked.temperature if checked.temperature is not None else req.temperature
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=default_t if temperature is None else temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=max(0, req.top_k or 0),
        min_p=req.min_p or 0.0,
        seed=req.seed,
        stop=stops(req.stop),
        json_schema=schema,
        grammar=grammar,
        min_tokens=req.min_tokens,
        ignore_eos=req.ignore_eos,
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
        buffered=tools is not None,
        # only a strategy that asks the model again quotes the request (usc, verify, ...)
        question="" if strategy.replayable else _question(req, item, prompt_ids, engine),
    )
    return Plan(
        kind="chat" if isinstance(req, ChatCompletionRequest) else "completion",
        model=req.model,
        job=job,
        include_candidates=include_candidates,
        stream=req.stream,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        notes=checked.notes,
        tools=tools,
        echo_text=_echo_text(req, item, prompt_ids, engine),
        ignored=checked.ignored,
    )


def _checked_prompt(
    req: ChatCompletionRequest | CompletionRequest,
    settings: Settings,
    engine: Engine,
    item: PromptItem | None = None,
    tools: ToolPlan | None = None,
) -> list[int]:
    """The prompt's token ids, at most PONDER_MAX_PROMPT_TOKENS of them."""
    prompt_ids = prompt_token_ids(req, engine, item, tools)
    if len(prompt_ids) > settings.max_prompt_tokens:
        raise ApiError(
            400,
            f"the prompt has {len(prompt_ids)} tokens; this server accepts at "
            f"most {settings.max_prompt_tokens}",
            param="messages" if isinstance(req, ChatCompletionRequest) else "prompt",
            code="prompt_too_long",
        )
    return prompt_ids


def _question(
    req: ChatCompletionRequest | CompletionRequest,
    item: PromptItem | None,
    prompt_ids: list[int],
    engine: Engine,
) -> str:
    """The request as text for prompts that quote it (Job.question): a chat's only user
    message (after any system messages), else its messages as a transcript; a completion's
    prompt text (token ids: their text)."""
    if isinstance(req, ChatCompletionRequest):
        said = [(m.role, _message_text(m, i)) for i, m in enumerate(req.messages)]
        asked = [text for role, text in said if role not in ("system", "developer")]
        if len(asked) == 1 and said[-1][0] == "user":
            return asked[0]
        return "\n\n".join(f"{role.capitalize()}: {text}" for role, text in said)
    if isinstance(item, str):
        return item
    return engine.detokenize(prompt_ids)


def _echo_text(
    req: ChatCompletionRequest | CompletionRequest,
    item: PromptItem | None,
    prompt_ids: list[int],
    engine: Engine,
) -> str | None:
    """The prompt as it is echoed: the caller's text, or token ids' text (special tokens
    shown, so the echo is what the model read)."""
    if not isinstance(req, CompletionRequest) or not req.echo:
        return None
    return item if isinstance(item, str) else engine.detokenize(prompt_ids, special=True)
