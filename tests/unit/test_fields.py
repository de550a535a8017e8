"""Issue 26 item 4 (in part): JSON answers are canonical (key order, number forms, white space)
and a vote per field assembles the answer from each path's winner."""

from __future__ import annotations

import json

import pytest

from ponder.answers import AnswerSpec, equivalent, extract
from ponder.answers.jsonanswers import assemble, canonical, leaves, parse_json
from ponder.strategies import REGISTRY, SelectOptions
from ponder.strategies.majority_vote import select

from .factories import make_sample

JSON = AnswerSpec("json")
FIELDS = AnswerSpec("json", vote="field")


def test_the_same_object_written_differently_is_one_answer() -> None:
    a = extract('{"name": "Ann", "age": 30}', JSON)
    b = extract('Here it is:\n```json\n{ "age": 30.0,\n  "name": "Ann" }\n```', JSON)
    c = extract('{"name": "Ann", "age": 31}', JSON)
    assert a is not None and b is not None and c is not None
    assert equivalent(a, b) and not equivalent(a, c)
    assert extract("no json here", JSON) is None
    assert parse_json("[1, 2]") == [1, 2]
    assert canonical({"b": [1.0, {"d": 2, "c": 1}], "a": "é"}) == '{"a":"é","b":[1,{"c":1,"d":2}]}'


def test_leaves_and_assemble_round_trip() -> None:
    value = {"a": {"b/c": 1, "t~": [True, None]}, "e": [], "f": "x"}
    paths = leaves(value)
    assert paths == {
        "/a/b~1c": "1",
        "/a/t~0/0": "true",
        "/a/t~0/1": "null",
        "/e": "[]",
        "/f": '"x"',
    }
    assert assemble(paths) == value


def test_a_vote_per_field_takes_each_fields_winner() -> None:
    texts = [
        '{"name": "Ann", "age": 30, "city": "Rome"}',
        '{"name": "Ann", "age": 31, "city": "Oslo"}',
        '{"name": "Bob", "age": 30, "city": "Oslo"}',
        '{"name": "Ann", "age": 30, "city": "Lima", "extra": 1}',
        "not json",
    ]
    samples = [make_sample(i, t) for i, t in enumerate(texts)]
    d = select(samples, SelectOptions(answer=FIELDS))
    assert d.answer == canonical({"name": "Ann", "age": 30, "city": "Oslo"})  # no sample has it
    fields = d.notes["fields"]
    assert fields["/name"] == {"value": "Ann", "votes": 3, "share": 3 / 5}
    assert fields["/city"]["votes"] == 2 and "/extra" not in fields  # 1 of 4 has it
    assert d.confidence == pytest.approx(2 / 5)  # the weakest field's share
    assert d.unanswered == 1 and d.chosen in (0, 1, 3)  # agrees with two of three winners
    whole = select(samples, SelectOptions(answer=JSON))  # object votes: all distinct
    assert whole.tally[0].votes == 1 and whole.confidence == pytest.approx(1 / 5)


def test_only_majority_vote_votes_per_field() -> None:
    from ponder.errors import UnsupportedRequest

    REGISTRY["majority_vote"].check(SelectOptions(answer=FIELDS), 8)
    for name in ("self_certainty", "rpc", "deepconf"):
        with pytest.raises(UnsupportedRequest):
            REGISTRY[name].check(SelectOptions(answer=FIELDS), 8)


def test_tool_calls_group_by_name_and_arguments_minus_the_ignored() -> None:
    def call(city: str, note: str) -> str:
        args = {"city": city, "note": note}
        return json.dumps({"tool_calls": [{"name": "get_weather", "arguments": args}]})

    texts = [call("Paris", "a"), call("Paris", "b"), call("Rome", "a"), "no call"]
    samples = [make_sample(i, t) for i, t in enumerate(texts)]
    strict = select(samples, SelectOptions(answer=AnswerSpec("tool_call")))
    assert strict.tally[0].votes == 1  # the notes differ: three different calls
    loose = select(
        samples, SelectOptions(answer=AnswerSpec("tool_call", ignore_arguments=("note",)))
    )
    assert loose.tally[0].votes == 2 and loose.unanswered == 1
    assert '"city":"Paris"' in (loose.answer or "") and "note" not in (loose.answer or "")
