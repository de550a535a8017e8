"""Stop strings over growing text: where one starts, and how much text is not yet safe to emit.

`StopMatcher` is fed only the characters a token adds: one KMP automaton per stop string
remembers how much of that stop the text currently ends with, so a token costs
O(its characters x stop strings) whatever the stop strings' length, and the holdback (the
longest tail that could still begin a stop) is known without rescanning anything.
"""

from __future__ import annotations

_REPLACEMENT = "\ufffd"


def stop_index(text: str, stops: tuple[str, ...], start: int = 0) -> int:
    """Index of the earliest stop string found at or after `start`, or -1."""
    found = [i for i in (text.find(s, start) for s in stops) if i != -1]
    return min(found) if found else -1


def _failure(stop: str) -> list[int]:
    """KMP's prefix function: for each prefix of `stop`, the length of its longest proper
    prefix that is also its suffix."""
    fail = [0] * len(stop)
    k = 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = fail[k - 1]
        if stop[i] == stop[k]:
            k += 1
        fail[i] = k
    return fail


class StopMatcher:
    """The stop strings of one growing text (one sequence); see the module docstring."""

    __slots__ = ("_fail", "_partial", "_replacements", "fed", "stops")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._fail = [_failure(s) for s in self.stops]
        self._partial = [0] * len(self.stops)
        self._replacements = 0
        self.fed = 0
        """Characters fed so far (the index in the whole text of the next one)."""

    def feed(self, added: str) -> int:
        """Feed the characters appended to the text. Returns the index (in the whole text)
        where the earliest-starting stop string completed by them begins, or -1."""
        found = -1
        for j, stop in enumerate(self.stops):
            q, fail, n = self._partial[j], self._fail[j], len(stop)
            for i, ch in enumerate(added):
                while q and stop[q] != ch:
                    q = fail[q - 1]
                if stop[q] == ch:
                    q += 1
                if q == n:  # this stop's first completion here is its earliest start
                    begin = self.fed + i - n + 1
                    found = begin if found == -1 else min(found, begin)
                    q = fail[q - 1]
                    break
            self._partial[j] = q
        trailing = len(added) - len(added.rstrip(_REPLACEMENT))
        self._replacements = self._replacements + trailing if trailing == len(added) else trailing
        self.fed += len(added)
        return found

    @property
    def holdback(self) -> int:
        """Trailing characters a stream must hold back: the longest tail that could begin a
        stop string, or a partial UTF-8 character (decoded as U+FFFD until its last byte
        arrives)."""
        return max(self._replacements, *self._partial) if self._partial else self._replacements


def holdback(text: str, stops: tuple[str, ...]) -> int:
    """`StopMatcher.holdback` of a whole text, looking only at its tail (as long as the
    longest stop string) and its trailing U+FFFD run."""
    matcher = StopMatcher(stops)
    longest = max((len(s) for s in matcher.stops), default=0)
    matcher.feed(text[len(text) - min(len(text), longest) :])
    run = 0
    while run < len(text) and text[len(text) - 1 - run] == _REPLACEMENT:
        run += 1
    return max(run, matcher.holdback)
