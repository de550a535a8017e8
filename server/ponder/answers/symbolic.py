"""Symbolic equality in a separate worker process with a hard timeout.

sympy can take unbounded time (or memory) on hostile input, and signal-based timeouts only
work in a main thread, so comparisons run in one spawned worker process. A comparison that
does not answer within the timeout counts as "not equal" and the worker is killed and
restarted on next use. Results are cached.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections import OrderedDict
from multiprocessing.connection import Connection
from typing import Any

DEFAULT_TIMEOUT_S = 2.0
_CACHE_SIZE = 4096


def symbolic_equal_inprocess(a: str, b: str) -> bool:
    """The comparison itself (runs inside the worker). Parse errors mean "not equal"."""
    import sympy

    from .mathexpr import MathParseError, parse_math

    try:
        ea, eb = parse_math(a), parse_math(b)
    except (MathParseError, ZeroDivisionError, TypeError, ValueError):
        return False
    return _expr_equal(sympy, ea, eb)


def _expr_equal(sympy: Any, ea: Any, eb: Any) -> bool:
    if isinstance(ea, sympy.Tuple) or isinstance(eb, sympy.Tuple):
        return (
            isinstance(ea, sympy.Tuple)
            and isinstance(eb, sympy.Tuple)
            and len(ea) == len(eb)
            and all(_expr_equal(sympy, x, y) for x, y in zip(ea, eb, strict=True))
        )
    try:
        if ea == eb:
            return True
        if not ea.free_symbols and not eb.free_symbols:
            va, vb = complex(sympy.N(ea, 30)), complex(sympy.N(eb, 30))
            return abs(va - vb) <= 1e-6 * max(1.0, abs(va), abs(vb))
        return bool(sympy.simplify(ea - eb) == 0)
    except (TypeError, ValueError, AttributeError, OverflowError):
        return False


def _serve(conn: Connection) -> None:
    import sympy  # noqa: F401  (imported once, before the first request)

    while True:
        try:
            a, b = conn.recv()
        except EOFError:
            return
        try:
            conn.send(symbolic_equal_inprocess(a, b))
        except Exception:
            conn.send(False)


class SymbolicWorker:
    """One worker process; `equal` is thread-safe and never blocks longer than the timeout."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Connection | None = None
        self._cache: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self.timeouts = 0
        self._warm = False

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def _ensure(self) -> Connection:
        if self._proc is None or not self._proc.is_alive() or self._conn is None:
            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            self._proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="ponder-sym")
            self._proc.start()
            child.close()
            self._conn = parent
        return self._conn

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
        self._warm = False

    def close(self) -> None:
        with self._lock:
            self._kill()

    def equal(self, a: str, b: str) -> bool:
        key = (a, b) if a <= b else (b, a)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            conn = self._ensure()
            # The first call also pays for the worker's start-up (spawn + import sympy).
            first = not self._warm
            try:
                conn.send(key)
                ok = conn.poll(self.timeout_s + (30.0 if first else 0.0))
                result = bool(conn.recv()) if ok else False
            except (EOFError, OSError, BrokenPipeError):
                ok, result = False, False
            if not ok:
                self.timeouts += 1
                self._kill()
            else:
                self._warm = True
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
