"""What the batcher runs on: the narrow adapter over the model and its context (`Model`;
engines/llamacpp.py implements it over llama.cpp, the scheduler's unit tests with a fake) and
what it counts (`Counters`)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np


class Model(Protocol):
    """What the batcher needs of the model and its context (engines/llamacpp.py implements it
    over llama.cpp; tests use a fake). Only the batcher's thread calls it."""

    n_vocab: int
    n_ctx: int
    n_seq: int
    """Sequence ids in the context: max_samples + spare."""
    max_samples: int
    punct: frozenset[int]
    eog: np.ndarray
    """The end-of-generation token ids (masked while a sample is under `min_tokens`)."""

    def decode(self, rows: list[tuple[int, int, int, bool]]) -> np.ndarray:
        """One llama_decode of (token, position, sequence, wants logits) rows: the logits rows
        asked for (valid until the next call). Raises EngineError."""

    def seq_rm(self, seq: int, p0: int, p1: int) -> None: ...

    def seq_cp(self, src: int, dst: int, p0: int, p1: int) -> None: ...

    def clear(self) -> None: ...

    def piece(self, token: int) -> bytes: ...

    def text(self, token: int, special: bool = False) -> str: ...

    def is_eog(self, token: int) -> bool: ...


@dataclasses.dataclass
class Counters:
    """What the batcher has done, for /metrics and tests (read without a lock: ints)."""

    steps: int = 0
    sequences: int = 0
    """Sequences summed over steps (occupancy = sequences / steps)."""
    shared_steps: int = 0
    """Steps that carried sequences of two or more requests."""
    deferred: int = 0
    """Rows a step left for the next one: a request's live samples over its share."""
    generated: int = 0
    prefilled: int = 0
    last_batch: int = 0
    decode_s: float = 0.0
    """Seconds inside llama_decode (the model's own work)."""
    grammar_s: float = 0.0
    """Seconds computing structured outputs' token masks (llguidance), on this thread."""
    busy_s: float = 0.0
    """Seconds of whole steps (decode + the host's sampling, stats, detokenizing, stops)."""
