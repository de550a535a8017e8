"""Mathematical equivalence by math-verify, in a worker process with a hard timeout.

sympy can take unbounded time (or memory) on hostile input, and math-verify's timeouts use
`signal.alarm`, which only works in a main thread. So comparisons run in one worker process
(`python -m ponder.answers.mathworker`, started as a plain subprocess: the program that uses
Ponder needs no `__main__` guard). A comparison that does not answer within the timeout counts
as "not equal" for that call only (it is not cached: a busy machine must not turn a slow "yes"
into a permanent "no"), and the worker is killed and restarted on next use. Definite answers
are cached, bounded. A worker that cannot start raises `SymbolicUnavailable` rather than
silently answering "not equal".
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

from .worker import WorkerProcess, WorkerUnavailable

DEFAULT_TIMEOUT_S = 2.0
_CACHE_SIZE = 4096

SymbolicUnavailable = WorkerUnavailable
"""The math-verify worker process could not be started (the message says why)."""


class SymbolicWorker:
    """The math-verify worker; `equal` is thread-safe and never blocks longer than the timeout
    (plus the worker's start-up, on first use or after a restart)."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._worker = WorkerProcess("ponder.answers.mathworker", what="math-verify worker")
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], bool] = OrderedDict()

    @property
    def timeouts(self) -> int:
        return self._worker.timeouts

    @property
    def spawned(self) -> int:
        return self._worker.spawned

    @property
    def restarts(self) -> int:
        """Workers started after the first (one per timeout or crash)."""
        return self._worker.restarts

    def start(self) -> None:
        self._worker.start()

    def close(self) -> None:
        self._worker.close()

    def equal(self, a: str, b: str) -> bool:
        key = (a, b) if a <= b else (b, a)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        line = self._worker.ask(json.dumps(key).encode(), self.timeout_s)
        if line not in (b"0", b"1"):
            return False
        result = line == b"1"
        with self._lock:
            self._cache[key] = result
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return result


_default: SymbolicWorker | None = None
_default_lock = threading.Lock()


def default_worker() -> SymbolicWorker:
    """The process-wide worker used by `equivalent`."""
    global _default
    with _default_lock:
        if _default is None:
            _default = SymbolicWorker()
        return _default
