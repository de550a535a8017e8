"""Strategies: each an object with a small protocol (`strategy.Strategy`), found in one
registry. Adding one = a module with a `STRATEGY` object (and its options model, if it has
options) + one line in `_ALL` below (docs/architecture.md, "Adding a strategy")."""

from __future__ import annotations

from . import (
    aggregate,
    cntp_decode,
    deepconf,
    majority_vote,
    rpc,
    search_run,
    self_certainty,
    usc,
    verify,
)
from .base import (
    AdaptiveOptions,
    Decision,
    Group,
    SelectOptions,
    StrategyOptions,
    TallyEntry,
    group_answers,
)
from .cntp import CntpOptions
from .deepconf import DeepConfOptions
from .rpc import RpcOptions
from .self_certainty import SelfCertaintyOptions
from .strategy import Decided, Defaults, Hooks, Job, Kind, Plain, Selection, Strategy, Variant

_ALL: tuple[Strategy, ...] = (
    Plain(),
    majority_vote.STRATEGY,
    self_certainty.STRATEGY,
    rpc.STRATEGY,
    cntp_decode.STRATEGY,
    deepconf.STRATEGY,
    usc.STRATEGY,
    aggregate.STRATEGY,
    verify.STRATEGY,
    search_run.BEAM,
    search_run.PARTICLES,
)

REGISTRY: dict[str, Strategy] = {s.name: s for s in _ALL}
"""Every strategy a request may name, by name (`none` = plain generation)."""

STRATEGIES: tuple[str, ...] = tuple(REGISTRY)

OPTIONS: dict[str, type[StrategyOptions]] = {
    s.options_key: s.options_model for s in _ALL if s.options_key and s.options_model
}
"""Each strategy's own options block by its key (`ponder.<key>`): the request schema's fields."""


def get_strategy(name: str) -> Strategy | None:
    return REGISTRY.get(name)


__all__ = [
    "OPTIONS",
    "REGISTRY",
    "STRATEGIES",
    "AdaptiveOptions",
    "CntpOptions",
    "Decided",
    "Decision",
    "DeepConfOptions",
    "Defaults",
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
    "StrategyOptions",
    "TallyEntry",
    "Variant",
    "get_strategy",
    "group_answers",
]
