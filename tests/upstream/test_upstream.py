"""Ponder in front of a real llama_cpp.server (embedded SmolLM2) on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from ponder.engines.llamacpp import embedded_model_path
from ponder.engines.upstream import UpstreamEngine, UpstreamPrompt
from ponder.types import SamplingParams

from ..conftest import Server, free_port, start_server, stop_server

Q = [{"role": "user", "content": "What is 3 + 4? Answer with a number."}]
VOCAB = 49152  # SmolLM2's


class Upstream:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = tmp / f"llama-server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(embedded_model_path()),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--n_ctx",
                    "4096",
                    "--interrupt_requests",
                    "False",
                    "--logits_all",  # its completions return logprobs only with this
                    "True",
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError(f"llama_cpp.server did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    up = Upstream(tmp_path_factory.mktemp("upstream"))
    up.start()
    yield up
    up.kill()


@pytest.fixture(scope="module")
def front(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("front"),
        {
            "PONDER_ENGINE": "upstream",
            "PONDER_UPSTREAM_URL": upstream.url,
            "PONDER_UPSTREAM_VOCAB_SIZE": str(VOCAB),
            "PONDER_UPSTREAM_TIMEOUT_S": "60",
        },
    )
    yield srv
    stop_server(srv)


def client(srv: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{srv.base_url}/v1", api_key="x", max_retries=0)


def test_models_list_the_upstream_model_and_aliases(front: Server) -> None:
    ids = [m.id for m in client(front).models.list().data]
    assert len(ids) >= 2 and ids[1] == f"{ids[0]}+majority_vote"


def test_n_fallback_gives_n_distinct_samples(front: Server) -> None:
    c = client(front)
    model = c.models.list().data[0].id
    r = c.chat.completions.create(
        model=model,
        messages=Q,
        max_tokens=24,
        seed=3,
        temperature=1.0,
        extra_body={
            "ponder": {"strategy": "majority_vote", "samples": 5, "include_candidates": True}
        },
    )
    p = r.model_extra["ponder"]
    assert p["generated"] == 5 and len(p["candidates"]) == 5
    assert len({cand["text"] for cand in p["candidates"]}) >= 3
    assert "does not honour n" in front.log.read_text()
    assert r.usage.completion_tokens == sum(cand["tokens"] for cand in p["candidates"])


@pytest.mark.parametrize(
    ("strategy", "exact"), [("majority_vote", True), ("self_certainty", False), ("rpc", True)]
)
def test_every_strategy_with_honest_exact_flag(front: Server, strategy: str, exact: bool) -> None:
    c = client(front)
    model = c.models.list().data[0].id
    r = c.chat.completions.create(
        model=model,
        messages=Q,
        max_tokens=24,
        seed=1,
        extra_body={"ponder": {"strategy": strategy, "samples": 3, "include_candidates": True}},
    )
    p = r.model_extra["ponder"]
    assert p["strategy"] == strategy and p["generated"] == 3 and p["exact"] is exact
    assert all(cand["mean_logprob"] <= 0 for cand in p["candidates"])
    assert r.choices[0].message.content == p["candidates"][p["chosen"]]["text"]


def test_plain_streaming_and_completions(front: Server) -> None:
    c = client(front)
    model = c.models.list().data[0].id
    chunks = list(c.chat.completions.create(model=model, messages=Q, max_tokens=16, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text and chunks[0].choices[0].delta.role == "assistant"
    r = c.completions.create(
        model=model,
        prompt="2 + 2 =",
        max_tokens=4,
        extra_body={"ponder": {"strategy": "rpc", "samples": 2}},
    )
    assert r.model_extra["ponder"]["generated"] == 2


def test_what_needs_a_tokenizer_is_a_clear_400(front: Server) -> None:
    """The upstream engine has no tokenizer: token-id prompts, prompt scoring (echo with
    logprobs) and the tokenizer endpoints are refused by name, never a 500."""
    c = client(front)
    model = c.models.list().data[0].id
    for kw, param in (
        ({"prompt": [[1, 2, 3]]}, "prompt"),
        ({"prompt": "Hi", "echo": True, "logprobs": 1}, "echo"),
    ):
        with pytest.raises(openai.BadRequestError) as err:
            c.completions.create(model=model, max_tokens=2, **kw)  # type: ignore[call-overload]
        assert err.value.body["param"] == param  # type: ignore[index]
    echo = c.completions.create(model=model, prompt="One, two,", echo=True, max_tokens=2)
    assert echo.choices[0].text.startswith("One, two,")
    r = httpx.post(f"{front.base_url}/tokenize", json={"prompt": "Hi"})
    assert r.status_code == 400 and "no tokenizer" in r.json()["error"]["message"]


def test_cntp_over_http(front: Server) -> None:
    """CNTP over /v1/completions: drafts and trials are continuation requests with the stop
    rules applied client-side; a chat turn cannot be continued, so chat + CNTP is a 400."""
    c = client(front)
    model = c.models.list().data[0].id
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model=f"{model}+cntp", messages=Q, max_tokens=8)
    assert err.value.body["code"] == "unsupported_strategy"
    r = c.completions.create(
        model=f"{model}+cntp",
        prompt="Q: Name two colours.\nA:",
        max_tokens=24,
        seed=2,
        extra_body={
            "ponder": {
                "include_candidates": True,
                "cntp": {"entropy_low": -2, "entropy_high": -1, "max_trials": 3},
            }
        },
    )
    p = r.model_extra["ponder"]
    notes = p["notes"]
    assert p["strategy"] == "cntp" and notes["branched_steps"] >= 1
    assert notes["trials"] == 3 * notes["branched_steps"]
    for step in notes["steps"]:
        assert step["perplexities"][step["chosen"]] == min(step["perplexities"])
    text = r.choices[0].text
    assert text == p["candidates"][0]["text"] and len(text) > 0
    # every generated token counts: trials (losers included) and the tokens past each cut
    assert r.usage.completion_tokens >= notes["trial_tokens"] >= p["candidates"][0]["tokens"]
    assert p["exact"] is False  # entropies from top-k logprobs


def test_approximate_entropy_is_close_to_the_exact_one(upstream: Upstream) -> None:
    """Position 0 of a completion: the upstream's top-20 approximation vs the exact entropy of
    the same distribution from the in-process engine (T = 1). Spreading the tail evenly is an
    upper bound; stated tolerance: at most 0.5 nats above, and never below by more than 0.05."""
    from llama_cpp import Llama
    from scipy.special import softmax

    prompts = ("The capital of France is", "Once upon a time", "1, 2, 3, 4,")

    async def approximations() -> list[float]:
        eng = UpstreamEngine(upstream.url, vocab_size=VOCAB)
        try:
            out = []
            for prompt in prompts:
                gen = await eng.sample(
                    UpstreamPrompt(text=prompt), SamplingParams(max_tokens=1, temperature=1.0), 1
                )
                out.append(float(gen.samples[0].entropy_processed[0]))
            return out
        finally:
            await eng.close()

    approx = asyncio.run(approximations())
    llm = Llama(model_path=str(embedded_model_path()), n_ctx=512, logits_all=True, verbose=False)
    try:
        for prompt, got in zip(prompts, approx, strict=True):
            llm.reset()
            llm.eval(llm.tokenize(prompt.encode()))
            q = softmax(np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64))
            exact = float(-(q * np.log(np.clip(q, 1e-300, None))).sum())
            print(f"{prompt!r}: exact entropy {exact:.3f}, approximated {got:.3f}")
            assert exact - 0.05 <= got <= exact + 0.5
    finally:
        llm.close()


def test_upstream_killed_mid_request_then_recovers(upstream: Upstream, front: Server) -> None:
    c = client(front)
    model = c.models.list().data[0].id
    errors: list[int] = []

    def long_request() -> None:
        try:
            c.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Tell a long story."}],
                max_tokens=400,
                extra_body={"ponder": {"strategy": "majority_vote", "samples": 4}},
            )
        except openai.APIStatusError as exc:
            errors.append(exc.status_code)
            assert exc.body["code"] in ("upstream_error", "upstream_timeout")
            assert "upstream" in exc.body["message"]

    import threading

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(1.5)
    upstream.kill()
    t.join(timeout=60)
    assert errors and errors[0] in (502, 504)
    assert httpx.get(f"{front.base_url}/ready").status_code == 200
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model=model, messages=Q, max_tokens=4)
    assert err.value.status_code == 502
    upstream.start()  # back on the same port: Ponder recovers without a restart
    r = c.chat.completions.create(model=model, messages=Q, max_tokens=4)
    assert r.choices[0].message.content is not None


def test_a_structured_output_is_asked_for_and_checked_on_the_way_back(front: Server) -> None:
    """Issue 26 item 2: the upstream is sent OpenAI's response_format; what comes back is
    validated against the schema. An upstream that cannot honour it (llama-cpp-python's
    server knows only its own json_object form) gives a clear error, never an unchecked pass."""
    import json

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    c = client(front)
    model = c.models.list().data[0].id
    try:
        r = c.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Carlos is 78. His name and age as JSON."}],
            max_tokens=40,
            temperature=0,
            response_format=fmt,  # type: ignore[arg-type]
        )
    except openai.APIStatusError as err:
        assert err.status_code == 502 and "upstream" in str(err.body)
        return
    if r.choices[0].finish_reason != "length":
        obj = json.loads(r.choices[0].message.content or "")
        assert isinstance(obj["name"], str) and isinstance(obj["age"], int)


def test_check_schema_refuses_a_reply_that_does_not_validate() -> None:
    from ponder.engines.upstream import check_schema
    from ponder.errors import UpstreamError

    from ..unit.factories import make_sample

    schema = '{"type": "object", "required": ["age"]}'
    check_schema([make_sample(0, '{"age": 3}')], schema)
    for bad in ('{"name": "x"}', "not json"):
        with pytest.raises(UpstreamError, match="not valid against the response_format"):
            check_schema([make_sample(0, '{"age": 3}'), make_sample(1, bad)], schema)


def test_step_level_search_over_http(front: Server) -> None:
    """Issue 28 on the upstream engine: each step is a /v1/completions continuation of the
    prompt and the partial solution; a step ends at the delimiter, which stays in the text
    the next step continues; a chat turn cannot be continued (400)."""
    c = client(front)
    model = c.models.list().data[0].id
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model=f"{model}+beam@2", messages=Q, max_tokens=8)
    assert err.value.body["code"] == "unsupported_strategy"
    r = c.completions.create(
        model=f"{model}+beam@4",
        prompt="Q: List three fruits, one per line.\nA:\n",
        max_tokens=40,
        seed=3,
        extra_body={
            "ponder": {"include_candidates": True, "beam": {"delimiter": "\n", "max_steps": 3}}
        },
    )
    p = r.model_extra["ponder"]
    search = p["notes"]["search"]
    assert search["steps"] >= 2 and search["prefix_tokens"] > 0, json.dumps(search)
    for step in search["tree"][1:]:  # a later step continues a text that ended at "\n"
        for node in step["nodes"]:
            parent = next(
                n for s in search["tree"] for n in s["nodes"] if n["id"] == node["parent"]
            )
            assert parent["finish"] is None
    assert r.usage.completion_tokens == search["step_tokens"]
    assert r.choices[0].text == p["candidates"][p["chosen"]]["text"]
