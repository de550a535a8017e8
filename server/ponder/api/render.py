"""Build OpenAI response bodies, stream chunks and the `ponder` metadata from an Outcome, as
the pydantic models of api/schemas.py (the same models /openapi.json publishes), dumped with
only the fields set: one source of truth for every shape a client sees."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from ..runner import Outcome
from ..types import Generation, PromptLogprobs, Sample
from .plan import Plan
from .schemas import (
    AssistantMessage,
    CandidateOut,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionResponse,
    CompletionTokensDetails,
    PonderMeta,
    TallyEntry,
    Timing,
    Usage,
)
from .tools import read_calls


def new_id(plan: Plan) -> str:
    prefix = "chatcmpl" if plan.kind == "chat" else "cmpl"
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(*generations: Generation) -> Usage:
    """Every generated token (of every sample and CNTP trial); each prompt once (it is
    prefilled once per request and shared). No token is a hidden reasoning token (the
    samples' whole text is what they generated), so `reasoning_tokens` is 0."""
    completion = sum(g.completion_tokens for g in generations)
    prompt = sum(g.prompt_tokens + g.followup_prompt_tokens for g in generations)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        completion_tokens_details=CompletionTokensDetails(
            reasoning_tokens=0, accepted_prediction_tokens=0, rejected_prediction_tokens=0
        ),
    )


def _generated(sample: Sample) -> range:
    """Every generated token's position: an end-of-turn token is in `logprobs` too (its text
    is empty), as `usage.completion_tokens` counts it. lm-evaluation-harness scores
    `token_logprobs[ctxlen:-1]`, taking the last entry for the generated token: leaving one
    out would drop the answer's last real token instead."""
    return range(sample.n_tokens)


def chat_logprobs(sample: Sample, positions: Sequence[int] | None = None) -> dict[str, Any]:
    """Chat `logprobs` of the sample's tokens (or of `positions`, a stream chunk's)."""
    content = []
    for i in _generated(sample) if positions is None else positions:
        tops = sample.top_logprobs[i] if sample.top_logprobs else []
        content.append(
            {
                "token": sample.tokens_text[i],
                "logprob": float(sample.logprob[i]),
                "bytes": list(sample.tokens_text[i].encode("utf-8")),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))} for t, lp in tops
                ],
            }
        )
    return {"content": content}


def completion_logprobs(
    sample: Sample | None,
    positions: Sequence[int] | None = None,
    *,
    prompt: PromptLogprobs | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    """Legacy completions `logprobs`: the echoed prompt's tokens first (`prompt`; the first
    has no logprob, as in OpenAI's API), then every token the sample generated (or `positions`).
    `text_offset` counts from `offset` (where this piece starts in the choice's text)."""
    tokens: list[str] = []
    lps: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    pos = offset
    if prompt is not None:
        for text, lp, top in zip(prompt.tokens_text, prompt.logprob, prompt.top, strict=True):
            tokens.append(text)
            lps.append(lp)
            tops.append(None if top is None else dict(top))
            offsets.append(pos)
            pos += len(text)
    if sample is not None:
        for i in _generated(sample) if positions is None else positions:
            tokens.append(sample.tokens_text[i])
            lps.append(float(sample.logprob[i]))
            tops.append(dict(sample.top_logprobs[i]) if sample.top_logprobs else {})
            offsets.append(pos)
            pos += len(sample.tokens_text[i])
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def echo_offset(plan: Plan, out: Outcome) -> int:
    """Where a completion choice's generated text starts (after the echoed prompt)."""
    if plan.echo_text is None:
        return 0
    prompt = out.generation.prompt_logprobs
    if prompt is not None:
        return sum(len(t) for t in prompt.tokens_text)
    return len(plan.echo_text)


def _choice(plan: Plan, out: Outcome, k: int, sample: Sample) -> ChatChoice | CompletionChoice:
    if plan.kind == "chat":
        calls = tool_calls(plan, sample)
        message = (
            AssistantMessage(role="assistant", content=sample.text)
            if calls is None
            else AssistantMessage(role="assistant", content=None, tool_calls=calls)
        )
        return ChatChoice(
            index=k,
            finish_reason="tool_calls" if calls else sample.finish_reason,
            message=message,
            logprobs=chat_logprobs(sample) if plan.logprobs is not None else None,
        )
    return CompletionChoice(
        index=k,
        finish_reason=sample.finish_reason,
        text=(plan.echo_text or "") + sample.text,
        logprobs=completion_logprobs(sample, prompt=out.generation.prompt_logprobs)
        if plan.logprobs is not None
        else None,
    )


def tool_calls(plan: Plan, sample: Sample) -> list[dict[str, Any]] | None:
    """The sample's reply as OpenAI `tool_calls` when the request has tools and the reply
    calls them (api/tools.py), else None."""
    if plan.tools is None or sample.finish_reason == "length":
        return None
    return read_calls(sample.text, plan.tools)


def finish_reason(plan: Plan, sample: Sample) -> str:
    """The choice's finish reason: `tool_calls` when its reply calls the request's tools."""
    return (
        "tool_calls" if plan.kind == "chat" and tool_calls(plan, sample) else sample.finish_reason
    )


def token_chunks(sample: Sample) -> list[tuple[str, list[int]]]:
    """The sample's text cut on token boundaries for streaming: (text, token positions) per
    chunk. Tokens without text (special ones) ride on the next chunk; from the first token
    whose text is not the next stretch of the sample's text (a character split across
    tokens, text cut at a stop string) the rest goes as one chunk, so text and positions
    are always complete."""
    out: list[tuple[str, list[int]]] = []
    text, pos, pending = sample.text, 0, []
    visible = list(_generated(sample))
    for j, i in enumerate(visible):
        piece = sample.tokens_text[i]
        pending.append(i)
        if not piece:
            continue
        if not text.startswith(piece, pos):
            out.append((text[pos:], pending + visible[j + 1 :]))
            return out
        out.append((piece, pending))
        pos += len(piece)
        pending = []
    if pos < len(text) or (pending and not out):
        out.append((text[pos:], pending))
    elif pending:  # tokens without text at the end (an end-of-turn token): on the last chunk
        out[-1] = (out[-1][0], out[-1][1] + pending)
    return out


def ponder_object(plan: Plan, out: Outcome) -> dict[str, Any] | None:
    """The response's `ponder` metadata, or None for strategy `none`."""
    d = out.decision
    if d is None:
        return None
    samples = out.generation.samples
    given: dict[str, Any] = {}  # the optional fields, only when they say something
    if d.confidence_raw is not None:
        given["confidence_raw"] = d.confidence_raw
    if out.stopped is not None:
        given["stopped"] = out.stopped
    notes = {**d.notes, **dict(plan.notes)}
    if len(out.choices) < plan.n:
        notes["n"] = (
            f"{plan.n} choices asked, {len(out.choices)} returned: choices are distinct answers "
            f"(best first), and the {len(samples)} samples hold {len(out.choices)}"
        )
    if notes:
        given["notes"] = notes
    if d.usage:
        given["usage"] = d.usage
    if plan.include_candidates:
        given["candidates"] = [candidate(out, s) for s in samples]
    meta = PonderMeta(
        strategy=d.strategy,
        samples=plan.samples,
        generated=len(samples),
        answer=d.answer,
        confidence=d.confidence,
        chosen=d.chosen,
        tally=[
            TallyEntry(answer=t.answer, votes=t.votes, score=t.score, share=t.share)
            for t in d.tally
        ],
        unanswered=d.unanswered,
        exact=out.exact,
        timing=Timing(
            queue_s=round(out.generation.queue_s, 6),
            generate_s=round(out.generation.generate_s, 6),
            select_s=round(out.select_s, 6),
        ),
        **given,
    )
    return meta.model_dump(exclude_unset=True)


def candidate(out: Outcome, s: Sample) -> CandidateOut:
    d = out.decision
    assert d is not None
    ans = d.answers[s.index]
    extra: dict[str, Any] = {name: values[s.index] for name, values in d.scores.items()}
    if s.confidence.size:  # DeepConf's per-token confidence, when the strategy asked for it
        extra["token_confidence"] = [round(float(c), 4) for c in s.confidence]
    return CandidateOut(
        index=s.index,
        answer=ans.text if ans else None,
        text=s.text,
        tokens=s.n_tokens,
        finish_reason=s.finish_reason,
        mean_logprob=s.mean_logprob,
        self_certainty=s.self_certainty,
        pruned=bool(d.pruned[s.index]) if d.pruned else False,
        **extra,
    )


MAX_ANSWER_HEADER = 256
"""Characters of X-Ponder-Answer (percent-encoded): the header is for a glance, the body has
the whole answer."""


def result_headers(plans: Sequence[Plan], outs: Sequence[Outcome]) -> dict[str, str]:
    """What was decided, as compact response headers, for clients that drop unknown body
    fields (LangChain's ChatOpenAI with `include_response_headers=True`, LiteLLM):
    X-Ponder-Strategy, -Samples (drawn), -Confidence, -Answer (percent-encoded UTF-8, at most
    MAX_ANSWER_HEADER characters, cut at a whole escape; absent when there is no answer).
    With a batch of prompts each value is the prompts' values, comma-separated. None for
    strategy `none` (nothing decided)."""
    decided = [(o.decision, len(o.generation.samples)) for o in outs if o.decision is not None]
    if not decided:
        return {}
    headers = {
        "X-Ponder-Strategy": plans[0].strategy,
        "X-Ponder-Samples": ",".join(str(n) for _, n in decided),
        "X-Ponder-Confidence": ",".join(
            "null" if d.confidence is None else f"{d.confidence:.4f}" for d, _ in decided
        ),
    }
    answers = [d.answer for d, _ in decided]
    if any(a is not None for a in answers):
        headers["X-Ponder-Answer"] = answer_header(answers)
    return headers


def answer_header(answers: Sequence[str | None]) -> str:
    """Answers percent-encoded (UTF-8; nothing but unreserved characters and escapes, so no
    header can be forged), comma-separated, cut to MAX_ANSWER_HEADER at a whole character."""
    pieces: list[str] = []
    size = 0
    for k, answer in enumerate(answers):
        for piece in ([","] if k else []) + [quote(c, safe="") for c in answer or ""]:
            if size + len(piece) > MAX_ANSWER_HEADER:
                return "".join(pieces)
            pieces.append(piece)
            size += len(piece)
    return "".join(pieces)


def response_body(plans: Sequence[Plan], outs: Sequence[Outcome]) -> dict[str, Any]:
    """The body of a request's outcomes, one per prompt: choices prompt-major (prompt p's
    k-th choice has index p * n + k, as OpenAI and vLLM number them), usage summed, and the
    `ponder` object (with a batch of prompts, a list of them in prompt order)."""
    plan = plans[0]
    choices: list[Any] = []
    for p, (one, out) in enumerate(zip(plans, outs, strict=True)):
        samples = out.generation.samples
        base = p * one.n
        choices += [_choice(one, out, base + k, samples[i]) for k, i in enumerate(out.choices)]
    metas = [ponder_object(one, out) for one, out in zip(plans, outs, strict=True)]
    meta: Any = metas[0] if len(metas) == 1 else metas
    fields: dict[str, Any] = {
        "id": new_id(plan),
        "created": int(time.time()),
        "model": plan.model,
        "choices": choices,
        "usage": usage(*[out.generation for out in outs]),
        **({"ponder": meta} if metas[0] is not None else {}),
    }
    body: ChatCompletionResponse | CompletionResponse = (
        ChatCompletionResponse(object="chat.completion", **fields)
        if plan.kind == "chat"
        else CompletionResponse(object="text_completion", **fields)
    )
    return body.model_dump(exclude_unset=True)


class ChunkWriter:
    """Builds the `chat.completion.chunk` / `text_completion` chunks of one streamed response."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.id = new_id(plan)
        self.created = int(time.time())

    def chunk(
        self,
        choices: list[ChatChunkChoice] | list[CompletionChunkChoice],
        *,
        usage: Usage | None = None,
        ponder: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A chunk's body; `usage` and `ponder` only when given."""
        fields: dict[str, Any] = {
            "id": self.id,
            "created": self.created,
            "model": self.plan.model,
            "choices": choices,
        }
        if usage is not None:
            fields["usage"] = usage
        if ponder is not None:
            fields["ponder"] = ponder
        chunk: ChatCompletionChunk | CompletionChunk = (
            ChatCompletionChunk(object="chat.completion.chunk", **fields)
            if self.plan.kind == "chat"
            else CompletionChunk(object="text_completion", **fields)
        )
        return chunk.model_dump(exclude_unset=True)

    def delta(
        self,
        index: int,
        *,
        text: str | None = None,
        role: bool = False,
        finish_reason: str | None = None,
        logprobs: dict[str, Any] | None = None,
        calls: list[dict[str, Any]] | None = None,
    ) -> Any:
        """One choice of a chunk (a ChatChunkChoice or CompletionChunkChoice)."""
        if self.plan.kind == "chat":
            said: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                said["content"] = text
            if calls is not None:  # OpenAI's tool-call deltas, each whole, with its index
                said["tool_calls"] = [{"index": i, **c} for i, c in enumerate(calls)]
            return ChatChunkChoice(
                index=index,
                delta=ChatDelta(**said),
                logprobs=logprobs,
                finish_reason=finish_reason,
            )
        return CompletionChunkChoice(
            index=index, text=text or "", logprobs=logprobs, finish_reason=finish_reason
        )
