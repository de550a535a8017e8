"""Callers' answer patterns (`ponder.answer.pattern`): a cheap first filter in the server,
then every compile and match in worker processes under a memory and a time limit.

The server process never compiles a caller's pattern. `check_pattern` refuses the obvious
bombs by an estimate of the compiled size (linear, compiles nothing), with a clear message;
what passes it is compiled by a pattern worker (`patternworker.py`: an address-space rlimit of
PATTERN_MEMORY_MB, a hard timeout held here), so a pattern whose real cost the estimate missed
fails in that process (400) and the process is replaced. Verdicts are cached (bounded), so a
pattern used by every request of a run is compiled once per worker.
"""

from __future__ import annotations

import collections
import json
import queue
import re
import threading

from ..errors import PonderError
from .worker import WorkerProcess

PATTERN_MEMORY_MB = 512
"""Address space of a pattern worker (the interpreter and `regex` take about 40 MB of it)."""
PATTERN_WORKERS = 2
"""Worker processes, so one slow pattern does not hold up every other request's."""
COMPILE_TIMEOUT_S = 5.0
"""Hard limit on one compile, on a busy machine (the pre-filter keeps real ones at
milliseconds)."""
REGEX_TIMEOUT_S = 0.1
"""A caller's pattern gets this long per sample; a pattern that runs longer extracts nothing."""
_VERDICTS = 256


class AnswerPatternError(PonderError):
    """A caller-supplied regex is refused (too large, or does not compile): 400."""

    status, code = 400, "invalid_pattern"

    def __init__(self, message: str) -> None:
        super().__init__(message, "ponder.answer.pattern")


MAX_REPEAT = 1000
"""Largest count a caller's pattern may repeat one item ({m}, {m,n}, {m,})."""
MAX_EXPANSION = 20_000
"""Largest size a caller's pattern may expand to when compiled (items x their counts, through
nested groups): `regex` expands counted repeats at compile time, so `(?:a{65535}){65535}`
would take gigabytes before anything is matched."""

_QUANT = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")


def _escape_end(pattern: str, i: int) -> int:
    """End of the escape at i (`\\x`, or `\\p{...}` and the like with their braces)."""
    j, n = i + 2, len(pattern)
    braced = pattern[i + 1 : i + 2] in ("p", "P", "N", "x", "u", "U", "g", "k")
    if braced and j < n and pattern[j] == "{":
        close = pattern.find("}", j)
        j = close + 1 if close != -1 else n
    return j


def _class_end(pattern: str, i: int) -> int:
    """End of the character class opening at i (nested classes and escapes skipped)."""
    j, n = i + 1, len(pattern)
    if j < n and pattern[j] == "^":
        j += 1
    if j < n and pattern[j] == "]":
        j += 1
    depth = 1
    while j < n and depth:
        if pattern[j] == "\\":
            j += 2
            continue
        depth += {"[": 1, "]": -1}.get(pattern[j], 0)
        j += 1
    return j


def _expansion(pattern: str) -> int:
    """Upper estimate of the compiled size: a sequence adds, a counted repeat multiplies (its
    larger bound, or its minimum when open-ended), groups nest. Raises AnswerPatternError for a
    repeat count over MAX_REPEAT. Linear in the pattern; compiles nothing."""
    frames = [0]  # running size of each open group
    last = 0  # size of the item a quantifier would apply to
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch in "\\[":  # an escape or a character class: one item
            frames[-1] += 1
            last, i = 1, (_escape_end if ch == "\\" else _class_end)(pattern, i)
            continue
        if ch == "(":
            frames.append(0)
            last, i = 0, i + 1
            continue
        if ch == ")":
            size = frames.pop() if len(frames) > 1 else 0
            frames[-1] += size
            last, i = size, i + 1
            continue
        if ch == "{" and (m := _QUANT.match(pattern, i)) and (m.group(1) or m.group(3)):
            low = int(m.group(1) or 0)
            high = int(m.group(3)) if m.group(3) else (low if m.group(2) is None else 0)
            count = max(low, high)
            if count > MAX_REPEAT:
                raise AnswerPatternError(
                    f"answer.pattern repeats an item {count} times; at most {MAX_REPEAT}"
                )
            frames[-1] += last * (count - 1) if count else -last
            last, i = last * count, m.end()
            continue
        if ch in "*+?|^$.":
            i += 1
            if ch == ".":
                frames[-1] += 1
                last = 1
            continue
        frames[-1] += 1
        last, i = 1, i + 1
    return max(sum(frames), 0)


def check_pattern(pattern: str) -> None:
    """Refuse a caller's pattern whose compiled form would be too large (AnswerPatternError),
    before anything compiles it."""
    size = _expansion(pattern)
    if size > MAX_EXPANSION:
        raise AnswerPatternError(
            f"answer.pattern expands to about {size} items when compiled; at most {MAX_EXPANSION}"
        )


class PatternWorkers:
    """PATTERN_WORKERS pattern worker processes (started on first use) and a bounded cache of
    verdicts. Thread-safe; callers run it off the event loop (it waits on a pipe)."""

    def __init__(self, workers: int = PATTERN_WORKERS, memory_mb: int = PATTERN_MEMORY_MB) -> None:
        self.memory_mb = memory_mb
        self._all = [
            WorkerProcess("ponder.answers.patternworker", (str(memory_mb),), "pattern worker")
            for _ in range(workers)
        ]
        self._idle: queue.LifoQueue[WorkerProcess] = queue.LifoQueue()
        for w in self._all:
            self._idle.put(w)
        self._lock = threading.Lock()
        self._verdicts: collections.OrderedDict[str, str | None] = collections.OrderedDict()

    @property
    def failures(self) -> int:
        """Calls that got no answer (over the time or memory limit, or a crash)."""
        return sum(w.timeouts for w in self._all)

    def close(self) -> None:
        for w in self._all:
            w.close()

    def _ask(self, pattern: str, texts: list[str]) -> dict[str, object] | None:
        line = json.dumps({"p": pattern, "t": texts, "s": REGEX_TIMEOUT_S}).encode()
        timeout = COMPILE_TIMEOUT_S + REGEX_TIMEOUT_S * len(texts)
        worker = self._idle.get()
        try:
            answer = worker.ask(line, timeout)
        finally:
            self._idle.put(worker)
        return json.loads(answer) if answer else None

    def _verdict(self, pattern: str, reply: dict[str, object] | None) -> str | None:
        error = (
            f"answer.pattern could not be compiled within the pattern worker's limits "
            f"({self.memory_mb} MB, {COMPILE_TIMEOUT_S:g} s)"
            if reply is None
            else reply.get("e")
        )
        with self._lock:
            self._verdicts[pattern] = None if error is None else str(error)
            self._verdicts.move_to_end(pattern)
            if len(self._verdicts) > _VERDICTS:
                self._verdicts.popitem(last=False)
        return None if error is None else str(error)

    def check(self, pattern: str) -> None:
        """AnswerPatternError unless the pattern passes the pre-filter and compiles in a
        worker within its limits."""
        check_pattern(pattern)
        with self._lock:
            known = pattern in self._verdicts
            error = self._verdicts.get(pattern)
        if not known:
            error = self._verdict(pattern, self._ask(pattern, []))
        if error is not None:
            raise AnswerPatternError(error)

    def schema_error(self, schema: str, lark: bool = False) -> str | None:
        """Why llguidance cannot build the grammar of this JSON schema (or, `lark`, this Lark
        grammar; compiled in a pattern worker, within its memory and time limits), or None
        when it can."""
        key = ("\0lark\0" if lark else "\0schema\0") + schema
        with self._lock:
            if key in self._verdicts:
                return self._verdicts[key]
        worker = self._idle.get()
        try:
            answer = worker.ask(json.dumps({"g": schema, "l": lark}).encode(), COMPILE_TIMEOUT_S)
        finally:
            self._idle.put(worker)
        reply = json.loads(answer) if answer else None
        error = (
            f"the schema could not be compiled within the worker's limits ({self.memory_mb} MB, "
            f"{COMPILE_TIMEOUT_S:g} s)"
            if reply is None
            else reply.get("e")
        )
        verdict = None if error is None else str(error)
        with self._lock:
            self._verdicts[key] = verdict
            if len(self._verdicts) > _VERDICTS:
                self._verdicts.popitem(last=False)
        return verdict

    def extract(self, pattern: str, texts: list[str]) -> list[str | None]:
        """Each text's answer under the pattern (None: no match, or over REGEX_TIMEOUT_S)."""
        self.check(pattern)
        if not texts:
            return []
        reply = self._ask(pattern, texts)
        if reply is None:  # over the time or memory limit: nothing extracted, this call only
            return [None] * len(texts)
        if "e" in reply:
            raise AnswerPatternError(str(reply["e"]))
        got = reply.get("a")
        return [a if isinstance(a, str) else None for a in got] if isinstance(got, list) else []


_default: PatternWorkers | None = None
_default_lock = threading.Lock()


def pattern_workers() -> PatternWorkers:
    """The process-wide pattern workers."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PatternWorkers()
        return _default
