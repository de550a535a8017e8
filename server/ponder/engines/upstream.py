"""The upstream engine: Ponder in front of any OpenAI-compatible server (`PONDER_ENGINE=upstream`).

Over HTTP (httpx, pooled connections, timeouts). N samples use the upstream's `n` and verify
it: when fewer choices come back than asked (llama.cpp's server silently returns one), the
missing ones are drawn as concurrent n=1 requests seeded seed+i, and from then on this upstream
is sent n=1 requests only (logged once). Per-token stats come from the upstream's logprobs: the
sampled token's logprob is exact (RPC is exact); entropy and self-certainty are approximated
from the top-k with the tail mass spread over the rest of the vocabulary (`exact: false`).

Prompts stay text: chat requests go to the upstream's chat completions with the messages,
completion requests to its completions with the prompt. The upstream hands out token texts,
not ids, so this engine numbers the token texts it sees (`detokenize` joins them back) and a
prompt extended with generated ids is the prompt text plus their text. That is what CNTP
needs, over `/v1/completions`: its stop rules (before a high-entropy position, after a
punctuation token) are applied client-side to chunks of 16 tokens (`chunked`). A chat turn
cannot be continued through a chat endpoint, so CNTP is offered for completion prompts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np

from ..errors import EngineError, UnsupportedRequest, UpstreamError
from ..types import (
    Generation,
    ProgressCallback,
    Sample,
    SampleCallback,
    SamplingParams,
    Session,
    StreamDelta,
)
from . import chunked
from .base import confidence_from_top, sample_each
from .vllm_stats import approximate

log = logging.getLogger("ponder.engine")

CHARS_PER_TOKEN = 4
"""Prompt lengths are estimated locally (for Ponder's limits); usage uses the upstream's count."""


class TokenTexts:
    """Numbers the token texts an upstream returns, so samples carry ids like any engine's."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._texts: list[str] = []

    def ids(self, texts: list[str]) -> list[int]:
        out = []
        for t in texts:
            if t not in self._ids:
                self._ids[t] = len(self._texts)
                self._texts.append(t)
            out.append(self._ids[t])
        return out

    def text(self, ids: list[int]) -> str:
        return "".join(self._texts[i] for i in ids if 0 <= i < len(self._texts))


class UpstreamPrompt(list[int]):
    """A prompt for the upstream: the messages or the text, plus placeholder ids (one per ~4
    characters) so that Ponder's prompt-length limits apply before anything is sent. Adding
    generated token ids (CNTP's growing prefix) appends their text to a text prompt."""

    def __init__(
        self,
        *,
        messages: list[dict[str, str]] | None = None,
        text: str | None = None,
        vocab: TokenTexts | None = None,
    ) -> None:
        size = len(text or "") + sum(len(m.get("content") or "") for m in messages or [])
        super().__init__([0] * max(1, size // CHARS_PER_TOKEN))
        self.messages = messages
        self.text = text
        self.vocab = vocab

    def __add__(self, other: list[int]) -> UpstreamPrompt:  # type: ignore[override]
        if not other:
            return self
        if self.messages is not None or self.vocab is None:
            raise EngineError("the upstream engine cannot continue a chat turn")
        return UpstreamPrompt(
            text=(self.text or "") + self.vocab.text(list(other)), vocab=self.vocab
        )


def base_url(url: str) -> str:
    """The upstream's root: the given URL with or without its trailing /v1."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _choice_tokens(
    choice: dict[str, Any], chat: bool
) -> tuple[list[str], list[float], list[dict[str, float]]]:
    """(token texts, sampled logprobs, top-k {token: logprob}) of one choice."""
    lp = choice.get("logprobs") or {}
    if chat:
        content = lp.get("content") or []
        tokens = [str(c.get("token", "")) for c in content]
        lps = [float(c.get("logprob", 0.0)) for c in content]
        tops = [
            {str(t["token"]): float(t["logprob"]) for t in (c.get("top_logprobs") or [])}
            for c in content
        ]
    else:
        tokens = [str(t) for t in lp.get("tokens") or []]
        lps = [float(x) if x is not None else 0.0 for x in lp.get("token_logprobs") or []]
        tops = [
            {str(k): float(v) for k, v in (d or {}).items()} for d in lp.get("top_logprobs") or []
        ]
    for i, tok in enumerate(tokens):  # the sampled token always belongs to its distribution
        if i < len(tops):
            tops[i].setdefault(tok, lps[i])
    return tokens, lps, tops


def to_sample(
    choice: dict[str, Any],
    index: int,
    chat: bool,
    vocab: int,
    temperature: float,
    texts: TokenTexts | None = None,
    confidence_k: int = 0,
) -> Sample:
    """A Ponder Sample from one OpenAI choice with logprobs (stats approximated; DeepConf's
    confidence, when asked, from the same top logprobs)."""
    tokens, lps, tops = _choice_tokens(choice, chat)
    if not (len(tokens) == len(lps) == len(tops)):
        raise UpstreamError("the upstream returned inconsistent logprobs")
    per = approximate(tops, tokens, vocab, temperature)  # type: ignore[arg-type]
    confidence = np.zeros(0, dtype=np.float32)
    if confidence_k > 0:
        confidence, _ = confidence_from_top(tops, confidence_k)
    text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
    return Sample(
        index=index,
        text=text or "",
        token_ids=texts.ids(tokens) if texts is not None else [0] * len(tokens),
        finish_reason=choice.get("finish_reason") or "stop",
        logprob=np.minimum(np.asarray(lps, dtype=np.float32), 0.0),
        kl_uniform=per["kl_uniform"],
        logprob_processed=per["logprob_processed"],
        entropy_processed=per["entropy_processed"],
        top_logprobs=[sorted(t.items(), key=lambda x: -x[1]) for t in tops],
        tokens_text=tokens,
        confidence=confidence,
    )


def check_schema(samples: list[Sample], schema: str) -> None:
    """Every finished reply of a structured output validates against its schema: the upstream
    is asked for it (response_format), and a reply that is not valid JSON of the schema is an
    error (502 naming the sample), never passed on as if it were."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(schema))
    for s in samples:
        if s.finish_reason == "length":
            continue  # cut by max_tokens: said by finish_reason, as on every engine
        try:
            validator.validate(json.loads(s.text))
        except (ValueError, jsonschema.ValidationError) as exc:
            raise UpstreamError(
                f"the upstream's reply {s.index} is not valid against the response_format "
                f"schema: {str(exc).splitlines()[0][:200]}"
            ) from None


class UpstreamEngine:
    """The Engine protocol over an OpenAI-compatible HTTP server."""

    exact_stats = False
    lockstep = 1
    continues_chat = False
    keeps_stop_tokens = False
    reports_admission = False

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        served_name: str | None = None,
        timeout_s: float = 600.0,
        top_logprobs: int = 20,
        vocab_size: int = 32000,
        max_context: int = 32768,
    ) -> None:
        self.url = base_url(url)
        self.model = model
        self.model_name = served_name or model or ""
        self.top_logprobs = top_logprobs
        self.n_vocab = vocab_size
        self.max_context = max_context
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self.honours_n: bool | None = None
        self.texts = TokenTexts()
        self.requests_sent = 0
        self._ready = False
        self._running = 0

    # ------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def in_flight(self) -> int:
        return self._running

    @property
    def queue_depth(self) -> int:
        return 0

    async def start(self) -> None:
        body = await self._call("GET", "/v1/models", None)
        models = [m.get("id") for m in body.get("data", []) if m.get("id")]
        if not models:
            raise UpstreamError(f"the upstream at {self.url} lists no models")
        self.model = self.model or models[0]
        self.model_name = self.model_name or self.model
        await self.sample(UpstreamPrompt(text="Hello"), SamplingParams(max_tokens=1), 1)
        self._ready = True
        log.info("upstream engine ready: %s at %s", self.model, self.url)

    async def close(self) -> None:
        self._ready = False
        await self._http.aclose()

    # ------------------------------------------------------------ prompts

    chat_template = None
    """The upstream server renders its own prompts: tools go in the generic form."""

    def render_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        if tools is not None:  # no template here, so no template's own tool format
            raise UnsupportedRequest("the upstream engine renders no chat template", "tools")
        return UpstreamPrompt(messages=messages)

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return UpstreamPrompt(text=text, vocab=self.texts)

    def detokenize(self, token_ids: list[int], special: bool = False) -> str:
        return self.texts.text(token_ids)

    def tokenizer_info(self) -> dict[str, Any]:
        raise UnsupportedRequest(
            "the upstream engine has no tokenizer of its own (prompts are sent as text); "
            "use the upstream server's tokenizer endpoints",
            "prompt",
        )

    @staticmethod
    def _own(prompt_ids: list[int], params: SamplingParams) -> UpstreamPrompt:
        """The prompt as this engine rendered it; token ids and prompt scoring need a
        tokenizer this engine does not have (400, not a wrong answer)."""
        if not isinstance(prompt_ids, UpstreamPrompt):
            raise UnsupportedRequest(
                "token-id prompts are not supported by the upstream engine (it has no "
                "tokenizer): send the prompt as text",
                "prompt",
            )
        if params.prompt_logprobs is not None:
            raise UnsupportedRequest(
                "echo with logprobs (prompt scoring) is not supported by the upstream engine",
                "echo",
            )
        if params.grammar is not None:  # only a chat template's tool form asks for one
            raise UnsupportedRequest("grammars are not supported by the upstream engine", "tools")
        if params.json_schema is not None and prompt_ids.messages is None:
            raise UnsupportedRequest(
                "response_format (structured outputs) goes to the upstream's chat endpoint: "
                "send a chat request",
                "response_format",
            )
        return prompt_ids

    def check_fits(self, prompt_tokens: int, max_tokens: int, samples: int) -> None:
        """The upstream enforces its own context; it answers (and Ponder relays) if exceeded."""

    def default_max_tokens(self, prompt_tokens: int, samples: int) -> int:
        return max(1, self.max_context - prompt_tokens)

    async def sample_many(
        self, requests: list[tuple[list[int], SamplingParams, int]]
    ) -> list[Generation]:
        return await sample_each(self, requests)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        yield self

    # ------------------------------------------------------------ HTTP

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        self.requests_sent += 1
        try:
            resp = await self._http.request(method, path, json=body)
        except httpx.TimeoutException as exc:
            raise UpstreamError(f"the upstream timed out ({type(exc).__name__})", 504) from exc
        except httpx.TransportError as exc:
            raise UpstreamError(f"the upstream is unreachable: {type(exc).__name__}") from exc
        if resp.status_code >= 400:
            raise UpstreamError(f"the upstream returned {resp.status_code}: {resp.text[:300]}")
        try:
            return resp.json()
        except ValueError as exc:
            raise UpstreamError(
                f"the upstream returned malformed JSON (status {resp.status_code})"
            ) from exc

    def _request(
        self,
        prompt: UpstreamPrompt,
        params: SamplingParams,
        n: int,
        seed: int | None,
        stream: bool = False,
    ) -> tuple[str, dict[str, Any]]:
        chat = prompt.messages is not None
        body: dict[str, Any] = {
            "model": self.model,
            "n": n,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": stream,
        }
        if seed is not None:
            body["seed"] = seed % 2**63
        if params.stop:
            body["stop"] = list(params.stop)
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.json_schema is not None:  # checked on the way back (check_schema)
            schema = json.loads(params.json_schema)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": schema, "strict": True},
            }
        if params.min_tokens > 0:  # vLLM's and llama.cpp's servers' extensions, passed on
            body["min_tokens"] = params.min_tokens
        if params.ignore_eos:
            body["ignore_eos"] = True
        if params.min_p > 0:
            body["min_p"] = params.min_p
        if chat:
            body["messages"] = prompt.messages
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
            return "/v1/chat/completions", body
        body["prompt"] = prompt.text
        body["logprobs"] = self.top_logprobs
        return "/v1/completions", body

    # ------------------------------------------------------------ generation

    async def sample(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        samples: int,
        on_progress: ProgressCallback | None = None,
        on_sample: SampleCallback | None = None,
    ) -> Generation:
        # on_sample is not called: a call cannot be cut short here (types.SampleCallback)
        prompt = self._own(prompt_ids, params)
        if params.confidence_top_k > self.top_logprobs:
            raise UnsupportedRequest(
                f"this upstream is asked for its top {self.top_logprobs} logprobs only "
                f"(PONDER_UPSTREAM_TOP_LOGPROBS); DeepConf's top_k must not exceed that",
                "ponder.deepconf.top_k",
            )
        started = time.perf_counter()
        if params.stop_entropy is not None or params.punct_stop or params.stop_confidence:
            gen = await chunked.generate(
                lambda ids, p: self.sample(ids, p, 1), self.detokenize, prompt_ids, params, samples
            )
            gen.generate_s = time.perf_counter() - started
            return gen
        self._running += 1
        try:
            choices: list[dict[str, Any]] = []
            prompt_tokens = 0
            if self.honours_n is not False or samples == 1:
                choices, prompt_tokens = await self._with_n(prompt, params, samples)
            if len(choices) < samples:
                missing = range(len(choices), samples)
                extra, tokens = await self._one_by_one(prompt, params, missing, on_progress)
                choices += extra
                prompt_tokens = prompt_tokens or tokens
            chat = prompt.messages is not None
            drawn = [
                to_sample(  # token texts numbered, so a search can continue a sample
                    c,
                    i,
                    chat,
                    self.n_vocab,
                    params.temperature,
                    self.texts,
                    params.confidence_top_k,
                )
                for i, c in enumerate(choices[:samples])
            ]
            if params.json_schema is not None:
                check_schema(drawn, params.json_schema)
        finally:
            self._running -= 1
        elapsed = time.perf_counter() - started
        return Generation(drawn, prompt_tokens or len(prompt), 0.0, elapsed, exact=False)

    async def _with_n(
        self, prompt: UpstreamPrompt, params: SamplingParams, samples: int
    ) -> tuple[list[dict[str, Any]], int]:
        """One request with the upstream's `n`; notes (and logs once) whether it honours it."""
        path, body = self._request(prompt, params, samples, params.seed)
        resp = await self._call("POST", path, body)
        choices = sorted(resp.get("choices") or [], key=lambda c: c.get("index", 0))
        prompt_tokens = int((resp.get("usage") or {}).get("prompt_tokens") or 0)
        if samples > 1:
            honours = len(choices) >= samples
            if self.honours_n is None or (self.honours_n and not honours):
                self.honours_n = honours
                if not honours:
                    log.warning(
                        "upstream %s does not honour n (asked %d, got %d): "
                        "drawing samples as concurrent n=1 requests",
                        self.url,
                        samples,
                        len(choices),
                    )
        return choices[:samples], prompt_tokens

    async def _one_by_one(
        self,
        prompt: UpstreamPrompt,
        params: SamplingParams,
        indices: range,
        on_progress: ProgressCallback | None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Samples `indices` as concurrent n=1 requests, sample i seeded seed + i."""

        async def one(i: int) -> tuple[dict[str, Any], int]:
            seed = None if params.seed is None else params.seed + i
            path, body = self._request(prompt, params, 1, seed)
            r = await self._call("POST", path, body)
            got = r.get("choices") or []
            if not got:
                raise UpstreamError("the upstream returned no choice")
            if on_progress is not None:
                on_progress(i + 1, indices.stop)
            return got[0], int((r.get("usage") or {}).get("prompt_tokens") or 0)

        extra = await asyncio.gather(*(one(i) for i in indices))
        return [c for c, _ in extra], (extra[0][1] if extra else 0)

    async def stream(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncIterator[StreamDelta]:
        prompt = self._own(prompt_ids, params)
        chat = prompt.messages is not None
        path, body = self._request(prompt, params, 1, params.seed, stream=True)
        body["stream_options"] = {"include_usage": True}
        merged: dict[str, Any] = {
            "logprobs": {"content": []}
            if chat
            else {"tokens": [], "token_logprobs": [], "top_logprobs": []}
        }
        text, finish, prompt_tokens = "", None, 0
        self.requests_sent += 1
        self._running += 1
        try:
            async with self._http.stream("POST", path, json=body) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise UpstreamError(
                        f"the upstream returned {resp.status_code}: {resp.text[:300]}"
                    )
                async for line in resp.aiter_lines():
                    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    event = json.loads(line[5:])
                    if event.get("usage"):
                        prompt_tokens = int(event["usage"].get("prompt_tokens") or 0)
                    for c in event.get("choices") or []:
                        piece = (c.get("delta") or {}).get("content") if chat else c.get("text")
                        finish = c.get("finish_reason") or finish
                        lp = c.get("logprobs") or {}
                        if chat:
                            merged["logprobs"]["content"] += lp.get("content") or []
                        else:
                            for key in ("tokens", "token_logprobs", "top_logprobs"):
                                merged["logprobs"][key] += lp.get(key) or []
                        if piece:
                            text += piece
                            yield StreamDelta(piece)
        except httpx.TimeoutException as exc:
            raise UpstreamError("the upstream timed out", 504) from exc
        except httpx.TransportError as exc:
            raise UpstreamError(f"the upstream is unreachable: {type(exc).__name__}") from exc
        except (ValueError, KeyError) as exc:
            raise UpstreamError("the upstream sent a malformed stream") from exc
        finally:
            self._running -= 1
        merged["finish_reason"] = finish
        if chat:
            merged["message"] = {"content": text}
        else:
            merged["text"] = text
        sample = to_sample(
            merged, 0, chat, self.n_vocab, params.temperature, self.texts, params.confidence_top_k
        )
        yield StreamDelta("", sample=sample, prompt_tokens=prompt_tokens or len(prompt))
