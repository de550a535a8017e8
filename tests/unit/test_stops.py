"""Stop strings over growing text (stops.py): the incremental matcher agrees with a plain
search at every step (its cost per token is measured in benchmarks/bench_stops.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ponder.stops import StopMatcher, holdback, stop_index

ALPHABET = st.sampled_from("ab\ufffd ")


def naive_holdback(text: str, stops: tuple[str, ...]) -> int:
    keep = len(text) - len(text.rstrip("\ufffd"))
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = max(keep, k)
                break
    return keep


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.text(ALPHABET, max_size=4), max_size=30),
    stops=st.lists(st.text(st.sampled_from("ab "), min_size=1, max_size=6), min_size=1, max_size=4),
)
def test_the_matcher_agrees_with_a_plain_search(pieces: list[str], stops: list[str]) -> None:
    """At each token: the first stop found (earliest start among those completed by that
    token) and the holdback are what a search of the whole text gives."""
    stop_t = tuple(stops)
    matcher = StopMatcher(stop_t)
    text = ""
    for piece in pieces:
        before = len(text)
        text += piece
        got = matcher.feed(piece)
        longest = max(len(s) for s in stop_t)
        want = stop_index(text, stop_t, max(0, before - longest + 1))
        assert got == want, (text, stop_t)
        if got != -1:
            return
        assert matcher.holdback == naive_holdback(text, stop_t)
        assert holdback(text, stop_t) == naive_holdback(text, stop_t)


def test_a_stop_found_across_tokens() -> None:
    m = StopMatcher(("</answer>",))
    assert m.feed("the answer is 4</ans") == -1
    assert m.holdback == len("</ans")
    assert m.feed("wer> more") == len("the answer is 4")
