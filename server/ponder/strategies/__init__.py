"""Selection strategies: each a pure function `select(samples, options) -> Decision`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..engines.base import Sample
from . import majority_vote, rpc, self_certainty
from .base import (
    CntpOptions,
    Decision,
    Group,
    RpcOptions,
    SelectOptions,
    SelfCertaintyOptions,
    TallyEntry,
    group_answers,
)

Selector = Callable[[Sequence[Sample], SelectOptions], Decision]

SELECTORS: dict[str, Selector] = {
    majority_vote.NAME: majority_vote.select,
    self_certainty.NAME: self_certainty.select,
    rpc.NAME: rpc.select,
}
"""Best-of-N selection strategies available on this server."""

DECODERS: tuple[str, ...] = ("cntp",)
"""Decoding strategies: they drive the engine step by step (ponder.decoding)."""

STRATEGIES: tuple[str, ...] = ("none", *SELECTORS, *DECODERS)
"""Every strategy a request may name (`none` = plain generation)."""

__all__ = [
    "DECODERS",
    "SELECTORS",
    "STRATEGIES",
    "CntpOptions",
    "Decision",
    "Group",
    "RpcOptions",
    "SelectOptions",
    "Selector",
    "SelfCertaintyOptions",
    "TallyEntry",
    "group_answers",
]
