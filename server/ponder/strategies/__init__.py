"""Strategies: each an object with a small protocol (`strategy.Strategy`), found in one
registry. Adding one = a module with a `STRATEGY` object + one line in `_ALL` below
(docs/architecture.md, "Adding a strategy")."""

from __future__ import annotations

from . import cntp_decode, deepconf, majority_vote, rpc, self_certainty
from .base import (
    AdaptiveOptions,
    CntpOptions,
    Decision,
    DeepConfOptions,
    Group,
    RpcOptions,
    SelectOptions,
    SelfCertaintyOptions,
    TallyEntry,
    group_answers,
)
from .strategy import Decided, Hooks, Job, Kind, Plain, Selection, Strategy

_ALL: tuple[Strategy, ...] = (
    Plain(),
    majority_vote.STRATEGY,
    self_certainty.STRATEGY,
    rpc.STRATEGY,
    cntp_decode.STRATEGY,
    deepconf.STRATEGY,
)

REGISTRY: dict[str, Strategy] = {s.name: s for s in _ALL}
"""Every strategy a request may name, by name (`none` = plain generation)."""

STRATEGIES: tuple[str, ...] = tuple(REGISTRY)


def get_strategy(name: str) -> Strategy | None:
    return REGISTRY.get(name)


__all__ = [
    "REGISTRY",
    "STRATEGIES",
    "AdaptiveOptions",
    "CntpOptions",
    "Decided",
    "Decision",
    "DeepConfOptions",
    "Group",
    "Hooks",
    "Job",
    "Kind",
    "Plain",
    "RpcOptions",
    "SelectOptions",
    "Selection",
    "SelfCertaintyOptions",
    "Strategy",
    "TallyEntry",
    "get_strategy",
    "group_answers",
]
