"""Stop strings over growing text: where one starts, and how much text is not yet safe to emit."""

from __future__ import annotations


def stop_index(text: str, stops: tuple[str, ...], start: int = 0) -> int:
    """Index of the earliest stop string found at or after `start`, or -1."""
    found = [i for i in (text.find(s, start) for s in stops) if i != -1]
    return min(found) if found else -1


def holdback(text: str, stops: tuple[str, ...]) -> int:
    """Trailing characters a stream must hold back: the longest suffix that could begin a stop
    string, or a partial UTF-8 character (decoded as U+FFFD until its last byte arrives)."""
    keep = len(text) - len(text.rstrip("\ufffd"))
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = max(keep, k)
                break
    return keep
