"""Issue 25 item 2: a batch of prompts on /v1/completions (a list of strings or of token-id
lists, as lm-eval sends with --batch_size and vLLM and OpenAI accept), through the openai SDK:
one selection per prompt, choices prompt-major, usage summed, limits for the batch."""

from __future__ import annotations

import openai
import pytest

from ..conftest import Server

PROMPTS = ["2 + 2 =", "The capital of France is", "3 * 3 ="]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def test_a_batch_equals_its_prompts_sent_one_by_one(client: openai.OpenAI) -> None:
    kw = {"model": "smollm2", "max_tokens": 6, "temperature": 0.8, "seed": 7, "n": 2}
    batch = client.completions.create(prompt=PROMPTS, **kw)
    assert [c.index for c in batch.choices] == list(range(6))  # prompt p, choice k: p * 2 + k
    prompt_tokens = completion_tokens = 0
    for p, text in enumerate(PROMPTS):
        one = client.completions.create(prompt=text, **kw)
        got = sorted(batch.choices[p * 2 : p * 2 + 2], key=lambda c: c.index)
        assert [c.text for c in got] == [c.text for c in one.choices]  # seeded: the same samples
        prompt_tokens += one.usage.prompt_tokens
        completion_tokens += one.usage.completion_tokens
    assert batch.usage.prompt_tokens == prompt_tokens
    assert batch.usage.completion_tokens == completion_tokens


def test_each_prompt_of_a_batch_is_its_own_vote(client: openai.OpenAI) -> None:
    ids = [
        client.completions.create(model="smollm2", prompt=p, max_tokens=1).usage.prompt_tokens
        for p in PROMPTS[:2]
    ]
    assert all(n > 0 for n in ids)
    r = client.completions.create(
        model="smollm2+majority_vote@4",
        prompt=PROMPTS[:2],
        max_tokens=6,
        temperature=0.8,
        seed=3,
        extra_body={"ponder": {"answer": {"format": "number"}, "include_candidates": True}},
    )
    metas = r.model_extra["ponder"]
    assert isinstance(metas, list) and len(metas) == 2 and len(r.choices) == 2
    for k, meta in enumerate(metas):
        assert meta["strategy"] == "majority_vote" and meta["generated"] == 4
        chosen = next(c for c in meta["candidates"] if c["index"] == meta["chosen"])
        assert r.choices[k].text == chosen["text"]  # each prompt's winner is its choice


def test_a_batch_of_token_id_lists(client: openai.OpenAI) -> None:
    ids = [[17, 28, 30], [504, 28]]
    r = client.completions.create(model="smollm2", prompt=ids, max_tokens=4, seed=1)
    assert len(r.choices) == 2
    for k, one in enumerate(ids):
        alone = client.completions.create(model="smollm2", prompt=one, max_tokens=4, seed=1)
        assert r.choices[k].text == alone.choices[0].text


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"model": "smollm2+majority_vote@8", "prompt": PROMPTS}, "prompt"),  # 3 x 8 > 16
        ({"model": "smollm2", "prompt": PROMPTS, "stream": True}, "stream"),
        ({"model": "smollm2", "prompt": ["a", ""]}, "prompt.1"),
        ({"model": "smollm2", "prompt": ["x"] * 17}, "prompt"),  # the server's max_samples 16
    ],
)
def test_a_batch_over_the_limits_is_a_clear_400(
    client: openai.OpenAI, extra: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(max_tokens=2, **extra)
    assert err.value.body["param"] == param
    assert client.models.list().data  # and the server is fine
