"""lm-evaluation-harness 0.4.13's requests (vendored shapes, lm_eval_0_4_13.json) against a
live server: its remote tokenizer, a multiple-choice loglikelihood item, and generation
through both completions and chat, with the plain model and with a voting alias."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import Server

SHAPES = json.loads((Path(__file__).parent / "lm_eval_0_4_13.json").read_text())

CONTEXT = "The capital of France is"
CHOICES = [" London", " Paris", " Tokyo", " banana"]  # the model is sure of " Paris"


class RemoteTokenizer:
    """What lm-eval's RemoteTokenizer does, over the vendored request shapes."""

    def __init__(self, base: str) -> None:
        self.base = base
        probe = SHAPES["remote_tokenizer"]["probe"]
        resp = httpx.request(probe["method"], base + probe["path"])
        resp.raise_for_status()
        self.info = resp.json()

    def encode(self, text: str) -> list[int]:
        shape = SHAPES["remote_tokenizer"]["encode"]
        body = {**shape["json"], "prompt": text}
        tokens = httpx.post(self.base + shape["path"], json=body).json()["tokens"]
        assert isinstance(tokens, list)
        return tokens

    def decode(self, ids: list[int]) -> str:
        shape = SHAPES["remote_tokenizer"]["decode"]
        return str(httpx.post(self.base + shape["path"], json={"tokens": ids}).json()["prompt"])


@pytest.fixture(scope="module")
def tok(server: Server) -> RemoteTokenizer:
    return RemoteTokenizer(server.base_url)


def post(server: Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(server.base_url + path, json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_remote_tokenizer_probe_and_round_trip(tok: RemoteTokenizer) -> None:
    assert {"eos_token", "bos_token", "pad_token", "chat_template"} <= set(tok.info)
    eos_ids = tok.encode(tok.info["eos_token"])
    assert len(eos_ids) == 1  # lm-eval takes encode(eos_token)[0] as the EOS id
    ids = tok.encode(CONTEXT)
    assert tok.decode(ids) == CONTEXT
    assert tok.encode(tok.decode(ids)) == ids


def loglikelihood(server: Server, model: str, context: list[int], cont: list[int]) -> tuple:
    body = {**SHAPES["loglikelihood"]["json"], "model": model, "prompt": [context + cont]}
    choice = sorted(
        post(server, SHAPES["loglikelihood"]["path"], body)["choices"], key=lambda c: c["index"]
    )[0]
    lp = choice["logprobs"]
    ctxlen = len(context)
    assert len(lp["token_logprobs"]) == ctxlen + len(cont) + 1  # the prompt, then one token
    scored = lp["token_logprobs"][ctxlen:-1]
    tops = lp["top_logprobs"][ctxlen:-1]
    greedy = all(t == max(top.values()) for t, top in zip(scored, tops, strict=True))
    return sum(scored), greedy


@pytest.mark.parametrize("model", ["smollm2", "smollm2+majority_vote@4"])
def test_multiple_choice_scores_the_right_choice(
    server: Server, tok: RemoteTokenizer, model: str
) -> None:
    context = tok.encode(CONTEXT)
    results = [loglikelihood(server, model, context, tok.encode(c)) for c in CHOICES]
    scores = [s for s, _ in results]
    assert scores.index(max(scores)) == CHOICES.index(" Paris")
    assert results[1][1] is True and results[3][1] is False  # " Paris" is the greedy token
    assert all(s < 0 for s in scores)


def test_echo_scores_equal_the_generated_tokens_logprob(
    server: Server, tok: RemoteTokenizer
) -> None:
    """The same number two ways: a prompt token's score (echo) and the logprob the model gave
    it when it generated that token."""
    context = tok.encode(CONTEXT)
    gen = post(
        server,
        "/v1/completions",
        {"model": "smollm2", "prompt": [context], "max_tokens": 1, "temperature": 0, "logprobs": 1},
    )
    token_lp = gen["choices"][0]["logprobs"]["token_logprobs"][0]
    paris = tok.encode(gen["choices"][0]["text"])
    score, greedy = loglikelihood(server, "smollm2", context, paris)
    assert greedy and score == pytest.approx(
        token_lp, abs=0.1
    )  # layouts differ (prefill vs decode)


def test_a_generated_end_of_turn_token_is_in_the_scores(
    server: Server, tok: RemoteTokenizer
) -> None:
    """Issue 25 item 1: a chat-formatted multiple-choice item, where after a one-word answer
    the model's next token is `<|im_end|>`. lm-eval scores `token_logprobs[ctxlen:-1]`: every
    entry is there (the generated end-of-turn token last, its text empty), so the slice is the
    continuation's tokens exactly."""
    messages = [{"role": "user", "content": "What is the capital of France? One word."}]
    rendered = httpx.post(server.base_url + "/tokenize", json={"messages": messages}).json()
    context = rendered["tokens"]
    ended = 0
    for choice in ("Paris.", "London.", "Rome.", "Berlin."):  # then the turn ends
        cont = tok.encode(choice)
        body = {**SHAPES["loglikelihood"]["json"], "model": "smollm2", "prompt": [context + cont]}
        out = post(server, SHAPES["loglikelihood"]["path"], body)
        c, usage = out["choices"][0], out["usage"]
        lp = c["logprobs"]
        n = len(context) + len(cont)
        assert len(lp["token_logprobs"]) == n + 1 == usage["prompt_tokens"] + 1
        assert usage["completion_tokens"] == 1
        # the slice is exactly the continuation's tokens, each scored
        assert lp["tokens"][len(context) : -1] == [tok.decode([t]) for t in cont]
        assert all(x <= 0 for x in lp["token_logprobs"][len(context) : -1])
        if c["finish_reason"] == "stop" and lp["tokens"][-1] == "":
            ended += 1  # the generated token was <|im_end|>: text empty, score present
            assert lp["token_logprobs"][-1] <= 0
    assert ended >= 1  # the case that lost a token before is exercised


@pytest.mark.parametrize("model", ["smollm2", "smollm2+majority_vote@4"])
def test_generate_until_over_completions(server: Server, tok: RemoteTokenizer, model: str) -> None:
    shape = SHAPES["generate_until_completions"]
    body = {**shape["json"], "model": model, "prompt": [tok.encode(CONTEXT)]}
    out = post(server, shape["path"], body)
    text = sorted(out["choices"], key=lambda c: c["index"])[0]["text"]
    assert isinstance(text, str) and not any(s in text for s in shape["json"]["stop"])
    as_text = post(server, shape["path"], {**body, "prompt": CONTEXT})
    assert as_text["choices"][0]["text"] == text  # token ids and text are the same prompt
    if "+" in model:  # temperature 0 with a vote: one greedy sample, and the response says so
        assert out["ponder"]["generated"] == 1 and "temperature" in out["ponder"]["notes"]


@pytest.mark.parametrize("model", ["smollm2", "smollm2+majority_vote@4"])
def test_generate_until_over_chat(server: Server, model: str) -> None:
    shape = SHAPES["generate_until_chat"]
    messages = [{"role": "user", "content": "What is the capital of France? One word."}]
    body = {**shape["json"], "model": model, "messages": messages}
    out = post(server, shape["path"], body)
    content = sorted(out["choices"], key=lambda c: c["index"])[0]["message"]["content"]
    assert "Paris" in content
