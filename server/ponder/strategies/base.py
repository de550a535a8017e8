"""Plain data shared by the selection strategies: options, groups, tally entries, the Decision."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..answers import Answer, AnswerSpec, equivalent, extract_many
from ..types import Sample

Equal = Callable[[Answer, Answer], bool]


class StrategyOptions(BaseModel):
    """A strategy's own options: the `ponder.<options_key>` block of a request, one pydantic
    model per strategy, declared in the strategy's module (its `options_model`). The request
    schema collects these models from the registry, so a strategy's options, their bounds and
    their checks live in one place (docs/architecture.md, "Adding a strategy")."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def drawn(self) -> StrategyOptions:
        """The part of these options that shapes how samples are drawn (sent when a run only
        draws samples for `ponder eval`; the rest is replayed on them)."""
        return self


OptionsT = TypeVar("OptionsT", bound=StrategyOptions)


class AdaptiveOptions(StrategyOptions):
    """Adaptive stopping (docs/strategies.md section 2), `ponder.adaptive`: draw in waves of
    `wave` samples and stop once the answer is settled (`samples` is the ceiling). `beta`:
    1 - I_0.5(a+1, b+1) >= threshold (a, b the top two vote counts; Adaptive-Consistency);
    `window`: the last `window` answers agree (ESC). Shared by every voting strategy."""

    method: Literal["beta", "window"] = "beta"
    threshold: float = Field(0.95, gt=0.5, lt=1.0, description="beta: P(leader wins) to stop")
    window: int = Field(4, ge=2, le=64, description="window: the last w answers agree")
    wave: int = Field(4, ge=1, le=64, description="samples drawn per wave")

    @model_validator(mode="after")
    def _own_parameters(self) -> AdaptiveOptions:
        other = {"beta": "window", "window": "threshold"}[self.method]
        if other in self.model_fields_set:
            raise ValueError(f"`{other}` does not apply to method '{self.method}'")
        return self


@dataclass(frozen=True)
class SelectOptions:
    """What a strategy's `check`, `decide` and `run` read: the answer format, adaptive
    stopping, and the strategy's own options (`own`, an instance of its `options_model`)."""

    answer: AnswerSpec = field(default_factory=AnswerSpec)
    own: StrategyOptions | None = None
    """None: the strategy's defaults."""
    adaptive: AdaptiveOptions | None = None
    """None: draw every sample (a fixed budget)."""

    def of(self, model: type[OptionsT]) -> OptionsT:
        """The strategy's own options as `model` (its defaults when none were given)."""
        return self.own if isinstance(self.own, model) else model()


@dataclass
class Group:
    """Samples whose answers are equivalent; `answer` is the first member's (representative)."""

    answer: Answer
    members: list[int]


@dataclass(frozen=True)
class TallyEntry:
    answer: str
    votes: int
    score: float
    share: float


@dataclass
class Decision:
    """What a selection strategy decided. `ranking[k]` is the sample shown for tally[k]."""

    strategy: str
    chosen: int
    answer: str | None
    confidence: float | None
    """None when the strategy has no measure of it (`aggregate` on a free-form answer): never a
    made-up number."""
    tally: list[TallyEntry]
    ranking: list[int]
    answers: list[Answer | None]
    unanswered: int
    exact: bool = True
    scores: dict[str, Sequence[float | None]] = field(default_factory=dict)
    """Per-sample scores shown with the candidates (None: the sample has none)."""
    pruned: list[bool] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)
    confidence_raw: float | None = None
    """Set when `confidence` was calibrated (PONDER_CALIBRATION): the strategy's own value."""
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Calls after the samples, by who ran them ("followup": this model, "verifier": an
    external one): their count and tokens (`ponder.usage`)."""


def extract_all(samples: Sequence[Sample], spec: AnswerSpec) -> list[Answer | None]:
    return extract_many([s.text for s in samples], spec)


def group_answers(answers: Sequence[Answer | None], equal: Equal = equivalent) -> list[Group]:
    """Greedy grouping in sampling order: join the first earlier group whose representative is
    equivalent, else start a new group. Samples without an answer join no group."""
    groups: list[Group] = []
    for i, ans in enumerate(answers):
        if ans is None:
            continue
        for g in groups:
            if equal(g.answer, ans):
                g.members.append(i)
                break
        else:
            groups.append(Group(ans, [i]))
    return groups


def first_best(scores: Sequence[float]) -> int:
    """Index of the largest score; ties go to the lowest index."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def rank_groups(groups: Sequence[Group], score: Sequence[float]) -> list[int]:
    """Group indices by descending score; ties keep first-member (sampling) order."""
    return sorted(range(len(groups)), key=lambda g: -score[g])


def score_tally(
    groups: Sequence[Group],
    scores: Sequence[float],
    member_key: Sequence[float],
    total: float | None = None,
) -> tuple[list[int], list[TallyEntry], list[int]]:
    """Rank answer groups by score: (group order, tally with share = score / total, and the
    sample shown for each group: its member with the highest `member_key`). `total` is the
    weight of every sample, answered or not (default: the groups' scores)."""
    total = sum(scores) if total is None else total
    order = rank_groups(groups, scores)
    tally = [
        TallyEntry(
            groups[g].answer.text,
            len(groups[g].members),
            float(scores[g]),
            scores[g] / total if total > 0 else 0.0,
        )
        for g in order
    ]
    return order, tally, [best_member(groups[g].members, member_key) for g in order]


def best_member(members: Sequence[int], key: Sequence[float]) -> int:
    """The member with the highest key; ties go to the earliest sample."""
    return max(members, key=lambda i: (key[i], -i))
