"""Plain data shared by the selection strategies: groups, tally entries, the Decision."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..answers import Answer, AnswerSpec, equivalent, extract_many
from ..types import Sample

Equal = Callable[[Answer, Answer], bool]


@dataclass(frozen=True)
class SelfCertaintyOptions:
    """`vote`: Borda voting (default) or plain best-of-N; `borda_p`: rank exponent p."""

    vote: bool = True
    borda_p: float = 0.5


@dataclass(frozen=True)
class RpcOptions:
    """`prune`: Reasoning Pruning with the Weibull mixture; false = plain Perplexity Consistency."""

    prune: bool = True


@dataclass(frozen=True)
class CntpOptions:
    """CNTP: M = max_trials, H_low = entropy_low, H_high = entropy_high (authors' defaults)."""

    max_trials: int = 10
    entropy_low: float = 0.01
    entropy_high: float = 1.5


@dataclass(frozen=True)
class DeepConfOptions:
    """DeepConf (docs/strategies.md section 6): token confidence from the top `top_k` raw
    logprobs, trace confidence = the lowest mean over sliding `window`-token windows. `keep`
    is eta, the share of traces kept: offline, traces at or above the (1 - keep) quantile of
    all traces' confidences vote; online, `warmup` traces set that quantile as the bar and
    every later trace is stopped by the engine once a window's mean falls below it."""

    mode: Literal["offline", "online"] = "offline"
    top_k: int = 20
    window: int = 2048
    keep: float = 0.9
    warmup: int = 16


@dataclass(frozen=True)
class AdaptiveOptions:
    """Adaptive stopping (docs/strategies.md section 2): draw in waves of `wave` samples and
    stop once the answer is settled. `beta`: 1 - I_0.5(a+1, b+1) >= threshold (a, b the top
    two vote counts; Adaptive-Consistency); `window`: the last `window` answers agree (ESC)."""

    method: Literal["beta", "window"] = "beta"
    threshold: float = 0.95
    window: int = 4
    wave: int = 4


@dataclass(frozen=True)
class SelectOptions:
    """Options of the strategies (each reads its own part)."""

    answer: AnswerSpec = field(default_factory=AnswerSpec)
    self_certainty: SelfCertaintyOptions = field(default_factory=SelfCertaintyOptions)
    rpc: RpcOptions = field(default_factory=RpcOptions)
    cntp: CntpOptions = field(default_factory=CntpOptions)
    deepconf: DeepConfOptions = field(default_factory=DeepConfOptions)
    adaptive: AdaptiveOptions | None = None
    """None: draw every sample (a fixed budget)."""


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
    confidence: float
    tally: list[TallyEntry]
    ranking: list[int]
    answers: list[Answer | None]
    unanswered: int
    exact: bool = True
    scores: dict[str, list[float]] = field(default_factory=dict)
    pruned: list[bool] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)
    confidence_raw: float | None = None
    """Set when `confidence` was calibrated (PONDER_CALIBRATION): the strategy's own value."""


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
