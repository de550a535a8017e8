"""Helpers every engine shares: CNTP's trial boundaries and chat rendering in which only the
template's own markers are special tokens. The engine protocol and its data are in
`ponder.types`, its errors in `ponder.errors`.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..types import PUNCTUATION, Generation, Sampler, SamplingParams


def punctuation_ids(encode: Callable[[str], list[int]]) -> frozenset[int]:
    """The ids that end a CNTP trial: `encode(c)[0]` for each PUNCTUATION character, as the
    authors' code does (a merged token that merely contains punctuation, such as ".\n\n",
    does not end a trial). `encode` must not add special tokens."""
    return frozenset(ids[0] for c in PUNCTUATION if (ids := encode(c)))


_SENTINEL = re.compile("(\u27e6[0-9a-f]{12}:\\d+\u27e7)")
"""A content placeholder of render_plain_content (its nonce is checked by lookup, so one
pattern serves every request)."""


def render_plain_content(
    messages: list[dict[str, Any]],
    render: Callable[[list[dict[str, Any]]], str],
    template_ids: Callable[[str], list[int]],
    text_ids: Callable[[str], list[int]],
) -> list[int]:
    """Token ids of a chat prompt in which only the chat template's own markers are special.

    The template is rendered with a sentinel in place of each message's content; the template's
    text between sentinels is tokenized with special tokens parsed (`template_ids`), each
    content with special tokens as plain text (`text_ids`), so a user who types
    `<|im_start|>system` gets those characters, not a forged turn. Linear in the prompt: the
    expensive special-token scan only sees the template's short pieces.
    """
    nonce = uuid.uuid4().hex[:12]
    marks = [f"\u27e6{nonce}:{i}\u27e7" for i in range(len(messages))]
    shown = [  # content that is no text (an assistant's tool calls alone) stays as it is
        {**m, "content": mark} if isinstance(m.get("content"), str) and m["content"] else m
        for m, mark in zip(messages, marks, strict=True)
    ]
    rendered = render(shown)
    index = {mark: i for i, mark in enumerate(marks) if shown[i] is not messages[i]}
    ids: list[int] = []
    for piece in _SENTINEL.split(rendered):
        if piece in index:
            ids += text_ids(messages[index[piece]]["content"])
        elif piece:
            ids += template_ids(piece)
    return ids


def ends_trial(piece: str) -> bool:
    """The text form of the same rule, for engines that see token texts but not ids (the
    upstream engine): the token's text is exactly one of the ten marks."""
    return len(piece) == 1 and piece in PUNCTUATION


def confidence_from_top(
    positions: Sequence[Mapping[Any, float]], k: int
) -> tuple[npt.NDArray[np.float32], bool]:
    """DeepConf's per-token confidence from per-position top logprobs (vLLM's `logprobs=k`,
    an OpenAI upstream's `top_logprobs`): minus the mean of each position's k best raw
    logprobs. A position may also hold the sampled token outside the top k (vLLM adds it), so
    only the k best count. The flag is false when some position had fewer than k."""
    out = np.empty(len(positions), dtype=np.float32)
    full = True
    for i, p in enumerate(positions):
        best = sorted(p.values(), reverse=True)[:k]
        full &= len(best) >= k
        out[i] = max(-float(np.mean(best)), 0.0) if best else 0.0
    return out, full


async def sample_each(
    sampler: Sampler, requests: list[tuple[list[int], SamplingParams, int]]
) -> list[Generation]:
    """`Session.sample_many` for an engine that does not batch prompts: concurrent calls."""
    return list(await asyncio.gather(*(sampler.sample(p, params, n) for p, params, n in requests)))
