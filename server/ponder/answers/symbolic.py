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
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict

DEFAULT_TIMEOUT_S = 2.0
START_TIMEOUT_S = 60.0
_CACHE_SIZE = 4096


class SymbolicUnavailable(RuntimeError):
    """The math-verify worker process could not be started (the message says why)."""


class SymbolicWorker:
    """One worker process; `equal` is thread-safe and never blocks longer than the timeout
    (plus the worker's start-up, on first use or after a restart)."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._cache: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self.timeouts = 0
        self.spawned = 0

    @property
    def restarts(self) -> int:
        """Workers started after the first (one per timeout or crash)."""
        return max(self.spawned - 1, 0)

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self.spawned += 1
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ponder.answers.mathworker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self._buf = b""
        line = self._readline(START_TIMEOUT_S)
        if line != b"ready":
            proc, self._proc = self._proc, None
            proc.kill()
            err = proc.communicate(timeout=5)[1].decode(errors="replace").strip()
            raise SymbolicUnavailable(f"the math-verify worker did not start: {err[-2000:]}")
        return self._proc

    def _readline(self, timeout_s: float) -> bytes | None:
        """One line from the worker, or None on timeout or end of output."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.strip()

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=5)
            for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
                if pipe is not None:
                    pipe.close()
        self._proc = None

    def close(self) -> None:
        with self._lock:
            self._kill()

    def equal(self, a: str, b: str) -> bool:
        key = (a, b) if a <= b else (b, a)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            proc = self._ensure()
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps(key).encode() + b"\n")
                line = self._readline(self.timeout_s)
            except (BrokenPipeError, OSError):
                line = None
            if line not in (b"0", b"1"):
                self.timeouts += 1
                self._kill()
                return False
            result = line == b"1"
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
