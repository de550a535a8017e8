"""The checks of a request that need no model: names and Unicode of what a caller sends,
stop strings, the prompt's size, and the OpenAI/vLLM fields this server refuses rather than
ignore. Cheap (counts and lengths), so they may run on the event loop before anything else;
`plan.py` turns the checked request into a Plan."""

from __future__ import annotations

import re
from typing import Any

from ..config import Settings
from .errors import ApiError
from .schemas import ChatCompletionRequest, CompletionRequest

MAX_STOP = 16
MAX_STOP_CHARS = 256
"""Longest stop string (hosted APIs keep them short too): a stream holds back up to this many
characters, and finding one costs in proportion to it on the engine's thread."""
FIELD_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""What a request field's name may be: unknown fields are named in a response header and the
log, so their names are checked before anything else."""


def stops(stop: str | list[str] | None) -> tuple[str, ...]:
    items = [stop] if isinstance(stop, str) else list(stop or [])
    if len(items) > MAX_STOP:
        raise ApiError(400, f"at most {MAX_STOP} stop strings", param="stop", code="invalid_value")
    if any(len(s) > MAX_STOP_CHARS for s in items):
        raise ApiError(
            400,
            f"a stop string may have at most {MAX_STOP_CHARS} characters",
            param="stop",
            code="invalid_value",
        )
    return tuple(s for s in items if s)


def check_bounds(req: ChatCompletionRequest | CompletionRequest, settings: Settings) -> None:
    """The limits on what drives rendering and tokenization, checked before either runs (cheap:
    counts and lengths only, so it may run on the event loop). Token-id prompts need no
    tokenizing; their length is checked against PONDER_MAX_PROMPT_TOKENS in build_plans."""
    check_field_names(req)
    stops(req.stop)
    if isinstance(req, ChatCompletionRequest) and len(req.messages) > settings.max_messages:
        raise ApiError(
            400,
            f"at most {settings.max_messages} messages per request (got {len(req.messages)})",
            param="messages",
            code="too_many_messages",
        )
    if isinstance(req, CompletionRequest) and _batch_size(req.prompt) > settings.max_samples:
        raise ApiError(
            400,
            f"at most {settings.max_samples} prompts per request (PONDER_MAX_SAMPLES; got "
            f"{_batch_size(req.prompt)})",
            param="prompt",
            code="request_too_large",
        )
    texts = _texts(req)
    chars = sum(len(text) for where, text in texts if where.startswith(("messages", "prompt")))
    if chars > settings.max_prompt_chars:
        raise ApiError(
            400,
            f"the prompt has {chars} characters; at most {settings.max_prompt_chars} "
            "(PONDER_MAX_PROMPT_CHARS)",
            param="messages" if isinstance(req, ChatCompletionRequest) else "prompt",
            code="prompt_too_long",
        )
    for where, text in texts:
        check_unicode(text, where)


def _batch_size(prompt: Any) -> int:
    """How many prompts a completions `prompt` holds (a list of strings or of token lists)."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        return len(prompt)
    return 1


def check_unicode(text: str, where: str) -> None:
    """400 for text that is not valid Unicode (an unpaired UTF-16 surrogate, which JSON can
    carry as an escape): no tokenizer or matcher could take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(
            400,
            f"{where} contains an unpaired UTF-16 surrogate (not valid Unicode text)",
            param=where,
            code="invalid_value",
        ) from None


def check_field_names(req: ChatCompletionRequest | CompletionRequest) -> None:
    """400 for a request field whose name is not FIELD_NAME (the name is not repeated: it
    could be anything)."""
    bad = sum(not FIELD_NAME.fullmatch(name) for name in req.model_extra or {})
    if bad:
        raise ApiError(
            400,
            f"{bad} request field name(s) are not 1 to 64 characters of A-Z, a-z, 0-9, "
            "'_', '.' or '-'",
            code="invalid_field_name",
        )


def _texts(req: ChatCompletionRequest | CompletionRequest) -> list[tuple[str, str]]:
    """Every caller string that reaches a tokenizer or a matcher, with its field path."""
    out: list[tuple[str, str]] = []
    if isinstance(req, ChatCompletionRequest):
        for i, m in enumerate(req.messages):
            if isinstance(m.content, str):
                out.append((f"messages.{i}.content", m.content))
            elif m.content is not None:
                out += [(f"messages.{i}.content", p.text or "") for p in m.content]
    else:
        items = req.prompt if isinstance(req.prompt, list) else [req.prompt]
        out += [("prompt", x) for x in items if isinstance(x, str)]
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    out += [("stop", x) for x in stops if isinstance(x, str)]
    pattern = req.ponder.answer.pattern if req.ponder is not None else None
    if pattern:
        out.append(("ponder.answer.pattern", pattern))
    return out


_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "repetition_penalty": (None, 1, 1.0),
    "logit_bias": (None, {}),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "guided_json": (None,),
    "guided_regex": (None,),
    "guided_choice": (None,),
    "guided_grammar": (None,),
    "best_of": (None, 1),
    "suffix": (None, ""),
    "echo": (None, False),  # a completions field (implemented); on chat, vLLM's extension
    "prompt_logprobs": (None,),
}
"""OpenAI/vLLM request fields Ponder does not implement yet, with the values that ask for
nothing (accepted). Any other value is refused, never ignored."""

_NO_EFFECT = frozenset({"user", "metadata", "store", "service_tier", "prompt_cache_key"})
"""OpenAI fields that do not change what is generated (accounting, storage, routing)."""


def refuse_unsupported(req: ChatCompletionRequest | CompletionRequest) -> tuple[str, ...]:
    """400 `unsupported_parameter` for a known field this server would otherwise ignore;
    returns the unknown fields (another tool's own), which are accepted and reported."""
    fields = {**(req.model_extra or {})}
    for name, neutral in _NEUTRAL.items():
        if name in fields and not any(fields[name] == v for v in neutral):
            raise ApiError(
                400,
                f"`{name}` is not supported by this server yet; remove it (a silent drop "
                "would give a plausible wrong result)",
                param=name,
                code="unsupported_parameter",
            )
    if isinstance(req, ChatCompletionRequest):
        for i, m in enumerate(req.messages):
            extra = m.model_extra or {}
            for name in ("function_call",):
                if extra.get(name):
                    raise ApiError(
                        400,
                        f"`messages.{i}.{name}` is not supported by this server yet",
                        param=f"messages.{i}.{name}",
                        code="unsupported_parameter",
                    )
    return tuple(sorted(n for n in fields if n not in _NEUTRAL and n not in _NO_EFFECT))
