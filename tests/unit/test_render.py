"""Pure unit tests of the response builders: token-boundary stream chunks, echo logprobs."""

from __future__ import annotations

import dataclasses

import numpy as np

from ponder.api.render import completion_logprobs, token_chunks
from ponder.types import PromptLogprobs

from .factories import make_sample


def sample(pieces: list[str], text: str | None = None, finish: str = "length"):  # type: ignore[no-untyped-def]
    s = make_sample(0, "".join(pieces) if text is None else text, [-0.5] * len(pieces))
    return dataclasses.replace(s, tokens_text=pieces, finish_reason=finish)


def test_chunks_follow_token_boundaries() -> None:
    s = sample(["The", " answer", " is", " 19", "."])
    assert token_chunks(s) == [
        ("The", [0]),
        (" answer", [1]),
        (" is", [2]),
        (" 19", [3]),
        (".", [4]),
    ]


def test_the_end_of_sequence_token_rides_on_the_last_chunk() -> None:
    """Issue 25 item 1: every generated token is in the logprobs (its text may be empty), in
    a stream too: an end-of-turn token goes with the last chunk, not a chunk of its own."""
    s = sample(["Hi", "!", ""], finish="stop")
    assert token_chunks(s) == [("Hi", [0]), ("!", [1, 2])]
    assert token_chunks(sample([""], finish="stop")) == [("", [0])]


def test_textless_tokens_ride_on_the_next_chunk() -> None:
    s = sample(["A", "", "B"])
    assert token_chunks(s) == [("A", [0]), ("B", [1, 2])]


def test_a_character_split_across_tokens_sends_the_rest_whole() -> None:
    # "€" is three bytes; two tokens each decode to a replacement character on their own
    s = sample(["Price ", "\ufffd", "\ufffd", " 5"], text="Price € 5")
    chunks = token_chunks(s)
    assert chunks == [("Price ", [0]), ("€ 5", [1, 2, 3])]
    assert "".join(t for t, _ in chunks) == s.text


def test_text_cut_at_a_stop_string_keeps_every_token() -> None:
    s = sample(["one", " two", "\n\n", "three"], text="one two")
    chunks = token_chunks(s)
    assert "".join(t for t, _ in chunks) == "one two"
    assert [p for _, ps in chunks for p in ps] == [0, 1, 2, 3]


def test_echo_logprobs_put_the_prompt_first() -> None:
    s = sample([" Paris", "."])
    prompt = PromptLogprobs(["The", " capital"], [None, -2.0], [None, [(" capital", -2.0)]])
    lp = completion_logprobs(s, prompt=prompt)
    assert lp["tokens"] == ["The", " capital", " Paris", "."]
    assert lp["token_logprobs"][:2] == [None, -2.0]
    assert np.allclose(lp["token_logprobs"][2:], [-0.5, -0.5])
    assert lp["top_logprobs"][:2] == [None, {" capital": -2.0}]
    assert lp["text_offset"] == [0, 3, 11, 17]


def test_stream_chunk_logprobs_count_offsets_from_where_the_chunk_starts() -> None:
    s = sample(["a", "bc", "d"])
    lp = completion_logprobs(s, [1, 2], offset=10)
    assert lp["tokens"] == ["bc", "d"] and lp["text_offset"] == [10, 12]


def test_the_answer_header_is_encoded_and_bounded() -> None:
    from urllib.parse import unquote

    from ponder.api.render import MAX_ANSWER_HEADER, answer_header

    assert answer_header(["42"]) == "42"
    assert answer_header(["x\r\nSet-Cookie: a=b", None]) == "x%0D%0ASet-Cookie%3A%20a%3Db,"
    long = answer_header(["é" * 200])  # 6 characters per é: cut at a whole escape
    assert len(long) <= MAX_ANSWER_HEADER and unquote(long) == "é" * (len(long) // 6)
    assert long.isascii() and "\n" not in long
