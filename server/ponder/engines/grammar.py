"""Constrained decoding on the embedded engine with llguidance (the grammar engine vLLM and
llama.cpp use): a JSON schema becomes a grammar, the grammar a matcher per sample, and each step
the matcher's token mask is applied to that sample's processed distribution before sampling
(docs/api.md, "Structured outputs"). The raw distribution, and so every per-token statistic a
strategy scores, is the model's own.

Compiling happens off the event loop and off the engine's thread (`Grammars.matchers`, called
in a worker thread before the request reaches the batcher); a schema has already been checked
in a memory-capped worker process (answers/patterns.py) before any of this runs. The engine's
thread only copies matchers, computes masks (tens of microseconds for a JSON schema) and
advances them by the sampled token.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import numpy as np

from ..errors import InvalidRequest

CACHE_SIZE = 64
"""Compiled schemas kept (matcher prototypes; a request's samples get copies)."""


def grammar_of(schema: str) -> str:
    """The llguidance grammar of a JSON schema (JSON text)."""
    from llguidance import LLMatcher

    return str(LLMatcher.grammar_from_json_schema(schema))


def grammar_of_lark(lark: str) -> str:
    """The llguidance grammar of a Lark grammar (llguidance's dialect, `%json` included)."""
    from llguidance import LLMatcher

    return str(LLMatcher.grammar_from_lark(lark))


class Grammars:
    """The llguidance tokenizer of one model (built once, ~0.3 s for SmolLM2's 49k tokens) and
    a bounded cache of compiled schemas."""

    def __init__(self, vocab: Any, n_vocab: int) -> None:
        self._vocab = vocab
        self.n_vocab = n_vocab
        self._tokenizer: Any = None
        self._cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _tok(self) -> Any:
        if self._tokenizer is None:
            from llguidance.llamacpp import lltokenizer_from_vocab

            self._tokenizer = lltokenizer_from_vocab(self._vocab, n_vocab=self.n_vocab)
        return self._tokenizer

    def matchers(self, grammar: str, count: int) -> list[Any]:
        """`count` fresh matchers for the grammar (`grammar_of` a schema, or of a Lark
        grammar; run in a worker thread: compiling grows with it). InvalidRequest when
        llguidance cannot use it."""
        from llguidance import LLMatcher

        with self._lock:
            proto = self._cache.get(grammar)
            if proto is None:
                proto = LLMatcher(self._tok(), grammar, log_level=0)
                if proto.is_error():
                    raise InvalidRequest(
                        f"the response_format schema cannot be used: {proto.get_error()[:300]}",
                        "response_format",
                    )
                self._cache[grammar] = proto
                if len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(grammar)
            return [proto.deep_copy() for _ in range(count)]


def allowed(matcher: Any, n_vocab: int) -> np.ndarray:
    """The tokens the matcher allows next, as a boolean row over the model's vocabulary."""
    bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[:n_vocab].astype(bool)
