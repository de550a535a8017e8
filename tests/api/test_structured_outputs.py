"""Issue 26 item 1 (and 5, 6 in part), through the openai SDK against the embedded model:
`response_format` json_object and json_schema constrain llama.cpp's decoding with llguidance,
so every reply parses and validates; the SDK's `chat.completions.parse` with a pydantic model;
a vote over constrained samples; bad schemas are 400s before anything is generated."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from pydantic import BaseModel, ConfigDict

from ..conftest import Server

TEXT = "Carlos is 78 years old, works as a lawyer and lives in Osaka."
ASK = [{"role": "user", "content": f"Extract the person as JSON: {TEXT}"}]
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
        "occupation": {"type": "string"},
    },
    "required": ["name", "age", "city", "occupation"],
    "additionalProperties": False,
}


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    age: int
    city: str
    occupation: str


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def valid(text: str) -> Person:
    return Person.model_validate_json(text)  # raises unless it parses and fits the schema


def test_the_sdks_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    r = client.chat.completions.parse(
        model="smollm2", messages=ASK, response_format=Person, max_tokens=80, seed=3
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Person) and r.choices[0].finish_reason == "stop"


def test_every_sample_validates_and_unconstrained_ones_need_not(client: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    kw = {"model": "smollm2", "messages": ASK, "max_tokens": 80, "temperature": 1.0, "n": 4}
    constrained = client.chat.completions.create(**kw, seed=1, response_format=fmt)
    for choice in constrained.choices:
        valid(choice.message.content or "")
    free = client.chat.completions.create(**kw, seed=1)
    failures = 0
    for choice in free.choices:
        try:
            valid(choice.message.content or "")
        except ValueError:
            failures += 1
    assert failures > 0  # the model alone does not write this JSON (the mask does the work)


def test_json_object_and_streaming(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        max_tokens=60,
        seed=2,
        response_format={"type": "json_object"},
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content or ""), dict)
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    chunks = client.chat.completions.create(
        model="smollm2", messages=ASK, max_tokens=80, seed=4, response_format=fmt, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    valid(text)


def test_a_vote_over_constrained_samples(client: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    r = client.chat.completions.create(
        model="smollm2+majority_vote@4:t0.8",
        messages=ASK,
        max_tokens=80,
        seed=5,
        response_format=fmt,
        extra_body={"ponder": {"answer": {"format": "text"}, "include_candidates": True}},
    )
    meta = r.model_extra["ponder"]
    assert meta["generated"] == 4
    for cand in meta["candidates"]:
        if cand["finish_reason"] == "stop":
            valid(cand["text"])
    valid(r.choices[0].message.content or "")


@pytest.mark.parametrize(
    ("fmt", "param"),
    [
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}},
            "response_format.json_schema.schema",
        ),
        ({"type": "json_schema"}, "response_format"),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"a": [[[[[[]]]]]] * 1}},
            },
            None,
        ),
    ],
)
def test_bad_schemas_are_400s_before_any_work(
    client: openai.OpenAI, fmt: dict, param: str | None
) -> None:
    deep: dict = {"type": "object"}
    for _ in range(40):
        deep = {"type": "object", "properties": {"x": deep}}
    if param is None:  # nested past the bound
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": deep}}
        param = "response_format.json_schema.schema"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2", messages=ASK, max_tokens=8, response_format=fmt
        )
    assert err.value.body["param"] == param
    assert client.models.list().data


def test_cntp_refuses_a_structured_output(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2+cntp",
            messages=ASK,
            max_tokens=8,
            response_format={"type": "json_object"},
        )
    assert err.value.body["param"] == "response_format"


def test_mask_time_is_in_the_metrics(server: Server) -> None:
    text = httpx.get(f"{server.base_url}/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("ponder_engine_grammar_seconds_total"))
    assert float(line.split()[-1]) > 0


def test_a_vote_per_field_assembles_a_valid_answer(client: openai.OpenAI) -> None:
    """Item 4: `answer: {"format": "json", "vote": "field"}` votes each field of the
    constrained samples separately; the answer validates, each field says its share."""
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    r = client.chat.completions.create(
        model="smollm2+majority_vote@6:t0.9",
        messages=ASK,
        max_tokens=80,
        seed=7,
        response_format=fmt,
        extra_body={"ponder": {"answer": {"format": "json", "vote": "field"}}},
    )
    meta = r.model_extra["ponder"]
    answer = valid(meta["answer"])
    fields = meta["notes"]["fields"]
    assert set(fields) == {"/name", "/age", "/city", "/occupation"}
    for path, f in fields.items():
        assert getattr(answer, path[1:]) == f["value"] and 0 < f["share"] <= 1
    assert meta["confidence"] == min(f["share"] for f in fields.values())
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2+rpc@4",
            messages=ASK,
            max_tokens=8,
            extra_body={"ponder": {"answer": {"format": "json", "vote": "field"}}},
        )
    assert err.value.body["param"] == "ponder.answer.vote"


@pytest.mark.parametrize("method", ["json_schema", "json_mode", "function_calling"])
def test_langchain_with_structured_output(server: Server, method: str) -> None:
    """Item 5: LangChain's ChatOpenAI.with_structured_output, with each of its methods: the
    JSON schema (response_format), the JSON mode, and function calling (a named tool)."""
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="smollm2",
        base_url=f"{server.base_url}/v1",
        api_key="unused",
        max_tokens=80,
        max_retries=0,
        seed=3,
    )
    if method in ("json_schema", "function_calling"):
        got = llm.with_structured_output(Person, method=method).invoke(ASK[0]["content"])
        assert isinstance(got, Person)
    else:
        keys = f"Extract the person as JSON with keys name, age, city, occupation: {TEXT}"
        got = llm.bind(max_tokens=160).with_structured_output(method="json_mode").invoke(keys)
        assert isinstance(got, dict) and got
