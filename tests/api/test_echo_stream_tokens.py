"""Through the real server: echo (prompt scoring), streams that carry logprobs and progress,
the tokenizer endpoints, and the clear errors around them."""

from __future__ import annotations

import httpx
import openai
import pytest

from ..conftest import Server

Q = [{"role": "user", "content": "What is 3 + 4? Answer with a number."}]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def test_echo_with_the_openai_sdk(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    r = client.completions.create(
        model="smollm2", prompt=prompt, echo=True, logprobs=2, max_tokens=3, temperature=0
    )
    c = r.choices[0]
    assert c.text.startswith(prompt) and len(c.text) > len(prompt)
    lp = c.logprobs
    n_prompt = len(lp.tokens) - r.usage.completion_tokens
    assert "".join(lp.tokens[:n_prompt]) == prompt
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x <= 0 for x in lp.token_logprobs[1:]) and all(
        len(t) == 2 for t in lp.top_logprobs[1:]
    )
    assert lp.text_offset[n_prompt] == len(prompt)
    # echo without logprobs: the text only
    plain = client.completions.create(
        model="smollm2", prompt=prompt, echo=True, max_tokens=3, temperature=0
    )
    assert plain.choices[0].text == c.text and plain.choices[0].logprobs is None


def test_echo_streams_the_prompt_first(client: openai.OpenAI) -> None:
    prompt = "One, two, three,"
    chunks = list(
        client.completions.create(
            model="smollm2", prompt=prompt, echo=True, max_tokens=4, temperature=0, stream=True
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.startswith(prompt) and len(text) > len(prompt)


def test_echo_logprobs_with_cntp_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(
            model="smollm2+cntp", prompt="Hi", echo=True, logprobs=1, max_tokens=2
        )
    assert err.value.body["param"] == "echo"  # type: ignore[index]


def test_streamed_logprobs_match_the_whole_response(client: openai.OpenAI) -> None:
    kw = {
        "model": "smollm2",
        "messages": Q,
        "max_tokens": 12,
        "seed": 4,
        "logprobs": True,
        "top_logprobs": 2,
    }
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, **kw))
    streamed = [
        e
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    want = whole.choices[0].logprobs.content
    assert [e.token for e in streamed] == [e.token for e in want]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in want])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content


def test_selection_stream_shows_progress_and_token_chunks(client: openai.OpenAI) -> None:
    kw = {
        "model": "smollm2+majority_vote@4",
        "messages": Q,
        "max_tokens": 24,
        "seed": 3,
        "extra_body": {"ponder": {"answer": {"format": "number"}}},
    }
    chunks = list(
        client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    progress = [
        c.model_extra["ponder"]["progress"]
        for c in chunks
        if "progress" in (c.model_extra or {}).get("ponder", {})
    ]
    assert progress[0] == {"done": 0, "total": 4} and progress[-1]["done"] == 4
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    whole = client.chat.completions.create(**kw)
    assert "".join(pieces) == whole.choices[0].message.content
    assert len(pieces) > 1 and max(len(p) for p in pieces) < 20  # token pieces, not slices
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    )
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 0


def test_tokenizer_endpoints(server: Server, client: openai.OpenAI) -> None:
    base = server.base_url
    info = httpx.get(f"{base}/tokenizer_info").json()
    assert info["eos_token"] == "<|im_end|>" and "<|im_start|>" in info["chat_template"]
    tok = httpx.post(
        f"{base}/tokenize", json={"prompt": "Hello world", "return_token_strs": True}
    ).json()
    assert tok["count"] == len(tok["tokens"]) == 2 and tok["token_strs"] == ["Hello", " world"]
    assert tok["max_model_len"] == info["model_max_length"]
    back = httpx.post(f"{base}/detokenize", json={"tokens": tok["tokens"]}).json()
    assert back == {"prompt": "Hello world"}
    chat = httpx.post(f"{base}/tokenize", json={"messages": Q}).json()
    r = client.chat.completions.create(model="smollm2", messages=Q, max_tokens=1)
    assert chat["count"] == r.usage.prompt_tokens  # the very ids the chat route uses


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, None),
        ("/tokenize", {}, None),
        ("/tokenize", {"prompt": "a", "add_generation_prompt": False}, "add_generation_prompt"),
        ("/tokenize", {"prompt": "a", "model": "gpt-4"}, "model"),
        ("/tokenize", {"prompt": "a", "truncate_prompt_tokens": 3}, "truncate_prompt_tokens"),
        ("/detokenize", {"tokens": [10**9]}, "tokens"),
        ("/detokenize", {"tokens": ["a"]}, "tokens.0"),
    ],
)
def test_tokenizer_endpoints_refuse_clearly(
    server: Server, path: str, body: dict, param: str | None
) -> None:
    r = httpx.post(server.base_url + path, json=body)
    assert r.status_code in (400, 404), r.text
    err = r.json()["error"]
    assert err["message"] and (param is None or err["param"] == param)


def test_prompt_shapes_and_their_messages(server: Server) -> None:
    url = f"{server.base_url}/v1/completions"
    ok = {"model": "smollm2", "max_tokens": 1, "temperature": 0}
    for prompt in ("Hi", ["Hi"], [12345, 28], [[12345, 28]]):
        assert httpx.post(url, json={**ok, "prompt": prompt}).status_code == 200, prompt
    for prompt in (5, [["a"]], [1.5], {"text": "x"}):
        r = httpx.post(url, json={**ok, "prompt": prompt})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        assert "list of one list of token ids" in r.json()["error"]["message"]
    r = httpx.post(
        url,
        json={**ok, "prompt": "Hi", "ponder": {"strategy": "majority_vote", "answer": "number"}},
    )
    assert r.status_code == 400 and '{"format": "number"}' in r.json()["error"]["message"]


def test_add_special_tokens_with_messages_is_refused(server: Server) -> None:
    body = {"messages": Q, "add_special_tokens": True}
    r = httpx.post(f"{server.base_url}/tokenize", json=body)
    assert r.status_code == 400 and "add_special_tokens" in r.json()["error"]["message"]
