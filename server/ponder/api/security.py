"""API keys, per-key rate and concurrency limits, and the bounded admission queue.

Keys are compared in constant time and never logged. Without keys, limits apply per client
address. `Gate.admit` hands out the permits of one request; they are returned when its engine
work ends (for a stream: when the stream ends or the client goes away).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from collections import defaultdict, deque

from fastapi import Request

from ..config import Settings
from .errors import ApiError


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class Gate:
    """Authentication and admission for the /v1 routes."""

    def __init__(self, settings: Settings, wait_counts: bool = True) -> None:
        self.settings = settings
        self.wait_counts = wait_counts
        """Whether the work admitted ahead of a request runs before it (an engine that takes
        requests one batch at a time) rather than beside it (llama.cpp's batcher, which
        reports admission, `types.ENGINE_WAIT`): only then does it delay the request's start
        in the deadline estimate below."""
        self.keys = settings.key_set()
        self._digests = [hashlib.sha256(k.encode()).digest() for k in self.keys]
        self._calls: dict[str, deque[float]] = defaultdict(deque)
        self._running: dict[str, int] = defaultdict(int)
        self.admitted = 0
        self.draining = False
        self.work = 0
        """Budgeted tokens (samples x max_tokens) of the requests admitted and not finished."""
        self.pace: float | None = None
        """Measured engine seconds per budgeted token (None until a request has finished)."""
        self.closing = asyncio.Event()
        """Set shortly before the shutdown grace period ends: in-flight requests then end
        with a 503 envelope (streams: an error event and [DONE]) instead of being cut."""

    def identify(self, request: Request) -> str:
        """The caller's identity for limits: a fingerprint of its key (401 if keys are on and
        it has none or a wrong one), else its address."""
        if not self.keys:
            return f"addr:{request.client.host if request.client else '-'}"
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "missing API key: send `Authorization: Bearer <key>`",
                code="missing_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hashlib.sha256(token.strip().encode()).digest()
        if not any(hmac.compare_digest(digest, d) for d in self._digests):
            raise ApiError(
                401,
                "invalid API key",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return f"key:{_fingerprint(token.strip())}"

    def _rate(self, who: str) -> None:
        limit = self.settings.rate_limit_per_minute
        if not limit:
            return
        now = time.monotonic()
        calls = self._calls[who]
        while calls and calls[0] <= now - 60.0:
            calls.popleft()
        if len(calls) >= limit:
            wait = max(1, math.ceil(calls[0] + 60.0 - now))
            raise ApiError(
                429,
                f"rate limit: {limit} requests per minute",
                code="rate_limited",
                headers={"Retry-After": str(wait)},
            )
        calls.append(now)

    def observe(self, budget_tokens: int, seconds: float) -> None:
        """Learn the engine's pace from a finished request: seconds per budgeted token
        (samples x max_tokens), an exponential moving average."""
        if budget_tokens <= 0 or seconds <= 0:
            return
        pace = seconds / budget_tokens
        self.pace = pace if self.pace is None else 0.8 * self.pace + 0.2 * pace

    def expected_wait(self) -> float:
        """Seconds of engine work already admitted, at the measured pace (0 before any)."""
        return 0.0 if self.pace is None else self.pace * self.work

    def _fits(self, budget_tokens: int) -> None:
        """503 now, with a Retry-After computed from the queue, when the request cannot finish
        within its deadline: its own work at the measured pace, plus the work admitted before
        it where waiting for the engine counts toward the deadline."""
        timeout = self.settings.request_timeout_s
        if not timeout or self.pace is None or self.admitted == 0:
            return
        ahead = self.expected_wait()
        counted = ahead if self.wait_counts else 0.0
        if counted + self.pace * budget_tokens > timeout:
            raise ApiError(
                503,
                f"the server is busy: about {ahead:.0f} s of work is queued ahead of this "
                f"request, which could not finish within its {timeout:g} s deadline",
                code="overloaded",
                headers={"Retry-After": str(max(1, math.ceil(ahead)))},
            )

    def admit(self, who: str, budget_tokens: int = 0) -> Permit:
        """The permits of one request: rate, per-caller concurrency, a queue slot, then time
        (the queued work at the measured pace must leave room for it within its deadline).
        Raises the 429/503 ApiError when one is not available. (Draining is refused earlier,
        by the `ready_engine` dependency of every /v1 route.)"""
        self._rate(who)
        limit = self.settings.concurrency_limit
        if limit and self._running[who] >= limit:
            raise ApiError(
                429,
                f"concurrency limit: {limit} requests at a time",
                code="concurrency_limited",
                headers={"Retry-After": "1"},
            )
        if self.admitted >= self.settings.max_queue:
            raise ApiError(
                503,
                "the server is at capacity: try again shortly",
                code="overloaded",
                headers={"Retry-After": "2"},
            )
        self._fits(budget_tokens)
        self._running[who] += 1
        self.admitted += 1
        self.work += budget_tokens
        return Permit(self, who, budget_tokens)

    def _release(self, who: str, budget_tokens: int) -> None:
        self.admitted -= 1
        self.work -= budget_tokens
        self._running[who] -= 1
        if not self._running[who]:
            del self._running[who]


class Permit:
    """A request's admission; `release()` is idempotent (streams release from several places)."""

    def __init__(self, gate: Gate, who: str, budget_tokens: int = 0) -> None:
        self._gate = gate
        self._who = who
        self._budget = budget_tokens
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate._release(self._who, self._budget)
