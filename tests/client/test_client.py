"""ponder_client against a real server on loopback (embedded SmolLM2), plus a tiny local HTTP
server for the retry and 401 paths (auth is not on the real server yet)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import openai
import pytest

import ponder_client
from ponder_client import AsyncPonder, Ponder, Result

from ..conftest import ROOT, Server

Q = "What is 3 + 4? Answer with a number."


@pytest.fixture(scope="module")
def client(server: Server) -> Ponder:
    with Ponder(server.base_url + "/v1/", max_retries=0) as c:  # a trailing /v1 is accepted
        yield c


def test_base_url_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Ponder("http://h:1/v1").base_url == "http://h:1"
    monkeypatch.setenv("PONDER_BASE_URL", "http://env:2/")
    assert Ponder().base_url == "http://env:2"


def test_models(client: Ponder) -> None:
    ids = [m.id for m in client.models()]
    assert ids[0] == "smollm2" and "smollm2+rpc" in ids and "smollm2+cntp" in ids


@pytest.mark.parametrize("strategy", ["none", "majority_vote", "self_certainty", "rpc", "cntp"])
def test_every_strategy(client: Ponder, strategy: str) -> None:
    samples = 1 if strategy in ("none", "cntp") else 3
    r = client.chat(
        Q,
        strategy=strategy,
        samples=samples,
        answer="number",
        max_tokens=24,
        seed=4,
        include_candidates=True,
    )
    assert isinstance(r, Result) and r.text
    assert r.usage.completion_tokens > 0
    if strategy == "none":
        assert r.ponder is None and r.answer is None
    else:
        assert r.strategy == strategy and r.ponder is not None
        assert r.ponder.generated == samples and len(r.candidates or []) == samples
        assert r.confidence == r.raw["ponder"]["confidence"]
        # the typed metadata is the raw JSON, field for field
        assert r.ponder.model_dump(mode="json", exclude_unset=True) == r.raw["ponder"]


def test_complete(client: Ponder) -> None:
    r = client.complete(
        "2 + 2 =",
        strategy="majority_vote",
        samples=3,
        max_tokens=4,
        answer={"format": "number"},
        stop=["\n"],
    )
    assert r.raw["object"] == "text_completion" and r.ponder and r.ponder.generated == 3


def test_stream_sync(client: Ponder) -> None:
    items = list(client.stream(Q, max_tokens=24, seed=5))
    final = items[-1]
    assert isinstance(final, Result)
    deltas = items[:-1]
    assert len(deltas) > 1 and all(isinstance(d, str) for d in deltas)
    assert "".join(deltas) == final.text
    assert final.usage.completion_tokens > 0 and final.finish_reason in ("stop", "length")
    voted = list(client.stream(Q, strategy="majority_vote", samples=3, max_tokens=24, seed=5))
    assert isinstance(voted[-1], Result) and voted[-1].ponder is not None
    assert "".join(x for x in voted[:-1] if isinstance(x, str)) == voted[-1].text


def test_async_client(server: Server) -> None:
    async def go() -> tuple[Result, list]:
        async with AsyncPonder(server.base_url, max_retries=0) as c:
            r = await c.chat(Q, strategy="rpc", samples=4, max_tokens=24, seed=6)
            items = [x async for x in c.stream(Q, max_tokens=16, seed=6)]
            return r, items

    r, items = asyncio.run(go())
    assert r.strategy == "rpc" and r.ponder and r.ponder.generated == 4
    assert isinstance(items[-1], Result) and "".join(items[:-1]) == items[-1].text


def test_errors_map_to_the_exception_tree(client: Ponder) -> None:
    with pytest.raises(ponder_client.NotFoundError) as nf:
        client.chat(Q, model="gpt-9")
    assert nf.value.status_code == 404 and nf.value.code == "model_not_found"
    assert nf.value.param == "model"
    with pytest.raises(ponder_client.BadRequestError) as br:
        client.chat(Q, strategy="majority_vote", samples=10_000)
    assert br.value.param == "ponder.samples" and isinstance(br.value, ponder_client.PonderError)
    with pytest.raises(ponder_client.APIConnectionError):
        Ponder("http://127.0.0.1:9", max_retries=0).models()


def test_openai_sdk_helpers(server: Server) -> None:
    oai = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
    body = ponder_client.extra_body(strategy="self_certainty", samples=3, answer="number")
    assert body == {
        "ponder": {"strategy": "self_certainty", "samples": 3, "answer": {"format": "number"}}
    }
    resp = oai.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": Q}], max_tokens=16, extra_body=body
    )
    meta = ponder_client.metadata(resp)
    assert meta is not None and meta.strategy == "self_certainty" and meta.generated == 3
    assert meta.model_dump(mode="json", exclude_unset=True) == resp.model_extra["ponder"]
    with pytest.raises(TypeError):
        ponder_client.extra_body(strategi="rpc")


class _Flaky(BaseHTTPRequestHandler):
    """503 with Retry-After: 1 on the first POST, then a real-shaped completion."""

    calls: ClassVar[list[float]] = []
    mode = "flaky"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _Flaky.calls.append(time.monotonic())
        if _Flaky.mode == "401":
            self._send(
                401,
                {
                    "error": {
                        "message": "invalid API key",
                        "type": "authentication_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
            )
        elif _Flaky.mode == "400":
            self._send(
                400,
                {
                    "error": {
                        "message": "bad",
                        "type": "invalid_request_error",
                        "param": "temperature",
                        "code": "invalid_value",
                    }
                },
            )
        elif _Flaky.mode == "500" and len(_Flaky.calls) == 1:
            self._send(500, {"error": {"message": "boom", "type": "server_error"}})
        elif _Flaky.mode == "no-retry":
            self._send(503, {"error": {"message": "no"}}, {"x-should-retry": "false"})
        elif len(_Flaky.calls) == 1:
            self._send(
                503,
                {
                    "error": {
                        "message": "overloaded",
                        "type": "server_error",
                        "param": None,
                        "code": "overloaded",
                    }
                },
                {"Retry-After": "1"},
            )
        else:
            self._send(
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "7"},
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> str:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    _Flaky.calls = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_retry_honours_retry_after(flaky: str) -> None:
    _Flaky.mode = "flaky"
    r = Ponder(flaky, max_retries=2).chat("q", model="m")
    assert r.text == "7" and len(_Flaky.calls) == 2
    assert _Flaky.calls[1] - _Flaky.calls[0] >= 0.95


def test_no_retry_on_other_4xx_and_401_mapping(flaky: str) -> None:
    _Flaky.mode = "400"
    with pytest.raises(ponder_client.BadRequestError):
        Ponder(flaky, max_retries=3).chat("q", model="m")
    assert len(_Flaky.calls) == 1
    _Flaky.mode = "401"
    with pytest.raises(ponder_client.AuthenticationError) as err:
        Ponder(flaky, api_key="wrong", max_retries=3).chat("q", model="m")
    assert err.value.code == "invalid_api_key" and len(_Flaky.calls) == 2


def test_retries_give_up_with_the_last_error(flaky: str) -> None:
    _Flaky.mode = "flaky"
    with pytest.raises(ponder_client.ServiceUnavailableError) as err:
        Ponder(flaky, max_retries=0).chat("q", model="m")
    assert err.value.headers.get("retry-after") == "1"


def test_ponder_ask_against_a_server(server: Server) -> None:
    cmd = [
        sys.executable,
        "-m",
        "ponder.cli",
        "ask",
        Q,
        "--url",
        server.base_url,
        "--samples",
        "3",
        "--max-tokens",
        "24",
        "--seed",
        "1",
        "--answer",
        "number",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "answer:" in out.stdout and "confidence:" in out.stdout
    assert "votes" in out.stdout and "share" in out.stdout
    raw = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    body = json.loads(raw.stdout)
    assert body["ponder"]["generated"] == 3 and body["ponder"]["strategy"] == "majority_vote"
    bad = subprocess.run(
        [*cmd[:5], "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert bad.returncode == 1 and "error" in bad.stdout


def test_ponder_ask_in_process() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ponder.cli",
            "ask",
            Q,
            "--samples",
            "2",
            "--max-tokens",
            "16",
            "--seed",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["ponder"]["generated"] == 2 and body["model"] == "smollm2"


def test_openai_pythons_retry_rules(flaky: str) -> None:
    """500 is retried (as openai-python does); `x-should-retry: false` is obeyed."""
    _Flaky.mode = "500"
    r = Ponder(flaky, max_retries=1).chat("q", model="m")
    assert r.text == "7" and len(_Flaky.calls) == 2
    _Flaky.mode = "no-retry"
    _Flaky.calls = []
    with pytest.raises(ponder_client.ServiceUnavailableError):
        Ponder(flaky, max_retries=3).chat("q", model="m")
    assert len(_Flaky.calls) == 1


def test_async_client_retries_with_the_same_rules(flaky: str) -> None:
    async def go() -> Result:
        async with AsyncPonder(flaky, max_retries=1) as c:
            return await c.chat("q", model="m")

    _Flaky.mode = "500"
    assert asyncio.run(go()).text == "7" and len(_Flaky.calls) == 2
