"""A line-protocol worker process with a hard timeout per call: the one way Ponder runs work
whose cost it cannot bound in process (math-verify's sympy, a caller's regular expression).

The worker is `python -m <module>` started as a plain subprocess (so the program using Ponder
needs no `__main__` guard); it writes `ready` once, then one line of answer per line of
question. A call that does not answer within its timeout, or whose worker dies (a crash, or
the memory limit the worker sets on itself), returns None; the worker is killed and a new one
starts on the next call. A worker that cannot start raises `WorkerUnavailable` rather than
letting the caller guess an answer.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time

START_TIMEOUT_S = 60.0


class WorkerUnavailable(RuntimeError):
    """The worker process could not be started (the message says why)."""


class WorkerProcess:
    """One worker process; `ask` is thread-safe and never blocks longer than its timeout (plus
    the worker's start-up, on first use or after a restart)."""

    def __init__(self, module: str, args: tuple[str, ...] = (), what: str = "worker") -> None:
        self.module = module
        self.args = args
        self.what = what
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self.timeouts = 0
        """Calls that got no answer (timeout, crash or memory limit)."""
        self.spawned = 0

    @property
    def restarts(self) -> int:
        """Workers started after the first (one per timeout or crash)."""
        return max(self.spawned - 1, 0)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def close(self) -> None:
        with self._lock:
            self._kill()

    def ask(self, line: bytes, timeout_s: float) -> bytes | None:
        """Send one line, return the worker's one-line answer, or None when it did not answer
        in time or died (the worker is then replaced before the next call)."""
        with self._lock:
            proc = self._ensure()
            assert proc.stdin is not None
            try:
                proc.stdin.write(line.rstrip(b"\n") + b"\n")
                answer = self._readline(timeout_s)
            except (BrokenPipeError, OSError):
                answer = None
            if answer is None:
                self.timeouts += 1
                self._kill()
            return answer

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._kill()
        self.spawned += 1
        self._proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self._buf = b""
        if self._readline(START_TIMEOUT_S) != b"ready":
            proc, self._proc = self._proc, None
            proc.kill()
            err = proc.communicate(timeout=5)[1].decode(errors="replace").strip()
            raise WorkerUnavailable(f"the {self.what} process did not start: {err[-2000:]}")
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
            chunk = os.read(fd, 1 << 16)
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
