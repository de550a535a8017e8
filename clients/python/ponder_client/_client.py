"""`Ponder` (sync) and `AsyncPonder`: one surface over httpx, with retries."""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import httpx

from ._exceptions import APIConnectionError, APIStatusError, APITimeoutError, make_status_error
from ._streaming import StreamAccumulator
from ._types import Model, PonderMetadata, Result


class _NotGiven:
    """Marks an argument the caller did not pass (distinct from an explicit None)."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _NotGiven()

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 2
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0

Messages = str | Sequence[Mapping[str, Any]]


def _base_url(base_url: str | None) -> str:
    url = (base_url or os.environ.get("PONDER_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


PONDER_OPTIONS = (
    "strategy",
    "samples",
    "answer",
    "include_candidates",
    "self_certainty",
    "rpc",
    "cntp",
)
"""Keyword arguments that go into the request's `ponder` object; all others are OpenAI's."""


def ponder_options(**options: Any) -> dict[str, Any]:
    """The request's `ponder` object (`answer` may be given as a format name, e.g. "number")."""
    unknown = set(options) - set(PONDER_OPTIONS)
    if unknown:
        raise TypeError(f"unknown ponder option(s): {', '.join(sorted(unknown))}")
    out = {k: v for k, v in options.items() if v is not NOT_GIVEN}
    if isinstance(out.get("answer"), str):
        out["answer"] = {"format": out["answer"]}
    return out


def _split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ponder options, OpenAI parameters) of a call's keyword arguments."""
    ponder = {k: v for k, v in kwargs.items() if k in PONDER_OPTIONS}
    params = {k: v for k, v in kwargs.items() if k not in PONDER_OPTIONS}
    return ponder_options(**ponder), params


def extra_body(**options: Any) -> dict[str, Any]:
    """What to pass as the openai SDK's `extra_body`: `{"ponder": {...}}`. Same keywords as
    `Ponder.chat` (strategy, samples, answer, include_candidates, self_certainty, rpc, cntp)."""
    return {"ponder": ponder_options(**options)}


def metadata(response: Any) -> PonderMetadata | None:
    """The typed `ponder` object of an openai SDK response (or chunk, or plain dict)."""
    if isinstance(response, Mapping):
        raw = response.get("ponder")
    else:
        extra = getattr(response, "model_extra", None) or {}
        raw = extra.get("ponder", getattr(response, "ponder", None))
    return PonderMetadata.model_validate(raw) if raw else None


def _build_body(
    kind: str,
    content: Messages,
    model: str,
    kwargs: dict[str, Any],
    extra: Mapping[str, Any] | None,
    stream: bool,
) -> dict[str, Any]:
    ponder, openai_params = _split(kwargs)
    body: dict[str, Any] = {"model": model}
    if kind == "chat":
        body["messages"] = (
            [{"role": "user", "content": content}] if isinstance(content, str) else list(content)
        )
    else:
        body["prompt"] = content
    body.update({k: v for k, v in openai_params.items() if v is not NOT_GIVEN})
    if ponder:
        body["ponder"] = ponder
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    for key, value in (extra or {}).items():
        if key == "ponder" and isinstance(value, Mapping):
            body["ponder"] = {**body.get("ponder", {}), **value}
        else:
            body[key] = value
    return body


def _retry_delay(attempt: int, headers: httpx.Headers | None) -> float:
    """Retry-After (seconds or HTTP date, capped), else exponential backoff with jitter."""
    value = headers.get("retry-after") if headers is not None else None
    if value:
        try:
            return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
                return min(max(when.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_S)
            except (TypeError, ValueError):
                pass
    return min(0.5 * 2**attempt, 8.0) * (1 - 0.25 * random.random())


def _path(kind: str) -> str:
    return "/v1/chat/completions" if kind == "chat" else "/v1/completions"


def _error(resp: httpx.Response) -> APIStatusError:
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    return make_status_error(resp.status_code, body, resp.headers)


class _Base:
    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        max_retries: int,
        default_model: str | None,
    ) -> None:
        self.base_url = _base_url(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get("PONDER_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self._model = default_model

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra or {})
        return headers

    def _timeout(self, timeout: Any) -> float:
        return self.timeout if timeout is NOT_GIVEN else timeout


class Ponder(_Base):
    """Synchronous client. `base_url` is the server root; a trailing `/v1` is accepted."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        *,
        model: str | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, model)
        self._http = http_client or httpx.Client()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Ponder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Any = None,
        timeout: Any = NOT_GIVEN,
        stream: bool = False,
    ) -> httpx.Response:
        url = f"{self.base_url}{path}"
        for attempt in range(self.max_retries + 1):
            retry_headers = None
            try:
                req = self._http.build_request(
                    method,
                    url,
                    json=json,
                    headers=self._headers(headers),
                    timeout=self._timeout(timeout),
                )
                resp = self._http.send(req, stream=stream)
            except httpx.TimeoutException:
                err: Exception = APITimeoutError()
            except httpx.TransportError as exc:
                err = APIConnectionError(f"could not connect to {self.base_url}: {exc}")
            else:
                if resp.status_code < 400:
                    return resp
                if stream:
                    resp.read()
                err = _error(resp)
                retry_headers = resp.headers
                if resp.status_code not in RETRY_STATUSES:
                    raise err
            if attempt >= self.max_retries:
                raise err
            time.sleep(_retry_delay(attempt, retry_headers))
        raise AssertionError("unreachable")

    def models(self, **kw: Any) -> list[Model]:
        """Served models and their strategy aliases (`model+strategy`)."""
        body = self._send("GET", "/v1/models", **kw).json()
        return [Model.model_validate(m) for m in body.get("data", [])]

    def _default_model(self) -> str:
        if self._model is None:
            self._model = self.models()[0].id
        return self._model

    def _body(
        self,
        kind: str,
        content: Messages,
        model: Any,
        kwargs: dict[str, Any],
        extra_body: Any,
        stream: bool,
    ) -> dict[str, Any]:
        mdl = self._default_model() if model is NOT_GIVEN or model is None else model
        return _build_body(kind, content, mdl, kwargs, extra_body, stream)

    def chat(
        self,
        messages: Messages,
        *,
        strategy: Any = NOT_GIVEN,
        samples: Any = NOT_GIVEN,
        answer: Any = NOT_GIVEN,
        model: Any = NOT_GIVEN,
        extra_body: Any = None,
        extra_headers: Any = None,
        timeout: Any = NOT_GIVEN,
        **kwargs: Any,
    ) -> Result:
        """A chat completion (a str is one user message). Other keywords: the `ponder` options
        (include_candidates, self_certainty, rpc, cntp) and any OpenAI parameter."""
        kwargs.update(strategy=strategy, samples=samples, answer=answer)
        body = self._body("chat", messages, model, kwargs, extra_body, stream=False)
        resp = self._send("POST", _path("chat"), json=body, headers=extra_headers, timeout=timeout)
        return Result.from_response(resp.json())

    def complete(
        self,
        prompt: str,
        *,
        strategy: Any = NOT_GIVEN,
        samples: Any = NOT_GIVEN,
        answer: Any = NOT_GIVEN,
        model: Any = NOT_GIVEN,
        extra_body: Any = None,
        extra_headers: Any = None,
        timeout: Any = NOT_GIVEN,
        **kwargs: Any,
    ) -> Result:
        """A raw-prompt completion (`/v1/completions`); keywords as for `chat`."""
        kwargs.update(strategy=strategy, samples=samples, answer=answer)
        body = self._body("completion", prompt, model, kwargs, extra_body, stream=False)
        resp = self._send(
            "POST", _path("completion"), json=body, headers=extra_headers, timeout=timeout
        )
        return Result.from_response(resp.json())

    def stream(
        self,
        messages: Messages,
        *,
        kind: str = "chat",
        model: Any = NOT_GIVEN,
        extra_body: Any = None,
        extra_headers: Any = None,
        timeout: Any = NOT_GIVEN,
        **kwargs: Any,
    ) -> Iterator[str | Result]:
        """Yield text deltas as they arrive, then the final Result (the last item).
        `kind="completion"` streams a raw prompt; keywords as for `chat`."""
        body = self._body(kind, messages, model, kwargs, extra_body, stream=True)
        resp = self._send(
            "POST", _path(kind), json=body, headers=extra_headers, timeout=timeout, stream=True
        )
        acc = StreamAccumulator(kind)
        try:
            for line in resp.iter_lines():
                delta = acc.feed(line)
                if delta:
                    yield delta
        except httpx.TransportError as exc:
            raise APIConnectionError(f"the stream was interrupted: {exc}") from exc
        finally:
            resp.close()
        yield acc.result()


class AsyncPonder(_Base):
    """Asynchronous client with the same surface as `Ponder`."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        *,
        model: str | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries, model)
        self._http = http_client or httpx.AsyncClient()

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPonder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Any = None,
        timeout: Any = NOT_GIVEN,
        stream: bool = False,
    ) -> httpx.Response:
        url = f"{self.base_url}{path}"
        for attempt in range(self.max_retries + 1):
            retry_headers = None
            try:
                req = self._http.build_request(
                    method,
                    url,
                    json=json,
                    headers=self._headers(headers),
                    timeout=self._timeout(timeout),
                )
                resp = await self._http.send(req, stream=stream)
            except httpx.TimeoutException:
                err: Exception = APITimeoutError()
            except httpx.TransportError as exc:
                err = APIConnectionError(f"could not connect to {self.base_url}: {exc}")
            else:
                if resp.status_code < 400:
                    return resp
                if stream:
                    await resp.aread()
                err = _error(resp)
                retry_headers = resp.headers
                if resp.status_code not in RETRY_STATUSES:
                    raise err
            if attempt >= self.max_retries:
                raise err
            await asyncio.sleep(_retry_delay(attempt, retry_headers))
        raise AssertionError("unreachable")

    async def models(self, **kw: Any) -> list[Model]:
        body = (await self._send("GET", "/v1/models", **kw)).json()
        return [Model.model_validate(m) for m in body.get("data", [])]

    async def _default_model(self) -> str:
        if self._model is None:
            self._model = (await self.models())[0].id
        return self._model

    async def _body(
        self,
        kind: str,
        content: Messages,
        model: Any,
        kwargs: dict[str, Any],
        extra_body: Any,
        stream: bool,
    ) -> dict[str, Any]:
        mdl = await self._default_model() if model is NOT_GIVEN or model is None else model
        return _build_body(kind, content, mdl, kwargs, extra_body, stream)

    async def chat(
        self,
        messages: Messages,
        *,
        strategy: Any = NOT_GIVEN,
        samples: Any = NOT_GIVEN,
        answer: Any = NOT_GIVEN,
        model: Any = NOT_GIVEN,
        extra_body: Any = None,
        extra_headers: Any = None,
        timeout: Any = NOT_GIVEN,
        **kwargs: Any,
    ) -> Result:
        kwargs.update(strategy=strategy, samples=samples, answer=answer)
        body = await self._body("chat", messages, model, kwargs, extra_body, stream=False)
        resp = await self._send(
            "POST", _path("chat"), json=body, headers=extra_headers, timeout=timeout
        )
        return Result.from_response(resp.json())

    async def complete(
        self,
        prompt: str,
        *,
        strategy: Any = NOT_GIVEN,
        samples: Any = NOT_GIVEN,
        answer: Any = NOT_GIVEN,
        model: Any = NOT_GIVEN,
        extra_body: Any = None,
        extra_headers: Any = None,
        timeout: Any = NOT_GIVEN,
        **kwargs: Any,
    ) -> Result:
        kwargs.update(strategy=strategy, samples=samples, answer=answer)
        body = await self._body("completion", prompt, model, kwargs, extra_body, stream=False)
        resp = await self._send(
            "POST", _path("completion"), json=body, headers=extra_headers, timeout=timeout
        )
        return Result.from_response(resp.json())

    async def stream(
        self,
        messages: Messages,
        *,
        kind: str = "chat",
        model: Any = NOT_GIVEN,
        extra_body: Any = None,
        extra_headers: Any = None,
        timeout: Any = NOT_GIVEN,
        **kwargs: Any,
    ) -> AsyncIterator[str | Result]:
        body = await self._body(kind, messages, model, kwargs, extra_body, stream=True)
        resp = await self._send(
            "POST", _path(kind), json=body, headers=extra_headers, timeout=timeout, stream=True
        )
        acc = StreamAccumulator(kind)
        try:
            async for line in resp.aiter_lines():
                delta = acc.feed(line)
                if delta:
                    yield delta
        except httpx.TransportError as exc:
            raise APIConnectionError(f"the stream was interrupted: {exc}") from exc
        finally:
            await resp.aclose()
        yield acc.result()
