"""Typed views of Ponder's responses (the `ponder` metadata object of docs/api.md)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class TallyEntry(_Model):
    answer: str
    votes: int
    score: float
    share: float


class Candidate(_Model):
    index: int
    answer: str | None = None
    text: str
    tokens: int
    finish_reason: str | None = None
    mean_logprob: float | None = None
    self_certainty: float | None = None
    pruned: bool = False
    trace_confidence: float | None = None
    """DeepConf: the trace's lowest sliding-window mean confidence."""
    token_confidence: list[float] | None = None
    """DeepConf: each token's confidence (minus the mean of its top-k logprobs)."""


class Timing(_Model):
    queue_s: float = 0.0
    generate_s: float = 0.0
    select_s: float = 0.0


class PonderMetadata(_Model):
    """The response's `ponder` object. Unknown fields are kept (`model_extra`)."""

    strategy: str
    samples: int
    generated: int
    answer: str | None = None
    confidence: float | None = None
    """None when the strategy has no measure of it (usc and aggregate on free-form answers)."""
    confidence_raw: float | None = None
    """The strategy's own confidence, when the server calibrates (PONDER_CALIBRATION)."""
    chosen: int
    tally: list[TallyEntry] = Field(default_factory=list)
    unanswered: int = 0
    exact: bool = True
    stopped: str | None = None
    """With `adaptive`: "settled" (stopped early) or "ceiling" (every sample drawn)."""
    candidates: list[Candidate] | None = None
    timing: Timing | None = None
    notes: dict[str, Any] | None = None
    usage: dict[str, dict[str, Any]] | None = None
    """The calls a strategy made after its samples (usc, aggregate, verify): "followup" (the
    model) and "verifier" (an external one)."""


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Model(_Model):
    id: str
    object: str = "model"
    created: int | None = None
    owned_by: str | None = None
    root: str | None = None


class Result(_Model):
    """One answer: the chosen text, its extracted answer and confidence, and the whole
    response in `raw`. For strategy `none` (no `ponder` object) answer/confidence are None."""

    text: str
    answer: str | None = None
    confidence: float | None = None
    strategy: str = "none"
    tally: list[TallyEntry] = Field(default_factory=list)
    candidates: list[Candidate] | None = None
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None
    ponder: PonderMetadata | None = None
    raw: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> Result:
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        text = message.get("content") if "message" in choice else choice.get("text")
        meta = PonderMetadata.model_validate(body["ponder"]) if body.get("ponder") else None
        return cls(
            text=text or "",
            answer=meta.answer if meta else None,
            confidence=meta.confidence if meta else None,
            strategy=meta.strategy if meta else "none",
            tally=meta.tally if meta else [],
            candidates=meta.candidates if meta else None,
            usage=Usage.model_validate(body.get("usage") or {}),
            finish_reason=choice.get("finish_reason"),
            ponder=meta,
            raw=body,
        )
