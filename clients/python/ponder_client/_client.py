"""`Ponder` (sync) and `AsyncPonder`: one implementation, two thin drivers.

Everything a call does — build the body, send, decide whether and when to retry, parse — is
written once, as a generator of I/O steps (`_Send`, `_Sleep`) in `_Core`; `Ponder` runs those
steps with a blocking httpx client, `AsyncPonder` with an async one (as openai-python and httpx
share their logic between their sync and async clients). Streams are parsed by `httpx-sse`.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from httpx_sse import EventSource

from ._exceptions import APIConnectionError, APIStatusError, APITimeoutError, make_status_error
from ._streaming import StreamAccumulator
from ._types import Model, PonderMetadata, Result

T = TypeVar("T")


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
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
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
    "deepconf",
    "adaptive",
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
    ponder = ponder_options(**{k: v for k, v in kwargs.items() if k in PONDER_OPTIONS})
    body: dict[str, Any] = {"model": model}
    if kind == "chat":
        body["messages"] = (
            [{"role": "user", "content": content}] if isinstance(content, str) else list(content)
        )
    else:
        body["prompt"] = content
    body.update({k: v for k, v in kwargs.items() if k not in PONDER_OPTIONS and v is not NOT_GIVEN})
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


# ---------------------------------------------------------------- retry rules (openai-python's)


def should_retry(response: httpx.Response) -> bool:
    """openai-python's rule: the server's `x-should-retry` header decides when present; else
    408 (timeout), 409 (lock), 429 (rate limit) and every 5xx are retried."""
    hint = response.headers.get("x-should-retry")
    if hint == "true":
        return True
    if hint == "false":
        return False
    return response.status_code in (408, 409, 429) or response.status_code >= 500


def retry_delay(attempt: int, headers: httpx.Headers | None) -> float:
    """`retry-after-ms`, then `retry-after` (seconds or an HTTP date) when within 60 s; else
    exponential backoff 0.5 s, 1 s, 2 s ... up to 8 s, with up to 25 % jitter."""
    if headers is not None:
        after: float | None = None
        if (ms := headers.get("retry-after-ms")) is not None:
            try:
                after = float(ms) / 1000
            except ValueError:
                after = None
        if after is None and (value := headers.get("retry-after")):
            try:
                after = float(value)
            except ValueError:
                try:
                    after = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
                except (TypeError, ValueError):
                    after = None
        if after is not None and 0 <= after <= MAX_RETRY_AFTER_S:
            return after
    delay = min(INITIAL_RETRY_DELAY * 2**attempt, MAX_RETRY_DELAY)
    return delay * (1 - 0.25 * random.random())


# ---------------------------------------------------------------- the shared core


@dataclass
class _Send:
    """Step: send this request; the driver answers with the response or the httpx error."""

    request: httpx.Request
    stream: bool


@dataclass
class _Sleep:
    seconds: float


Step = Generator[_Send | _Sleep, Any, T]


def _path(kind: str) -> str:
    return "/v1/chat/completions" if kind == "chat" else "/v1/completions"


def _error(resp: httpx.Response) -> APIStatusError:
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    return make_status_error(resp.status_code, body, resp.headers)


class _Core:
    """What both clients do, as generators of I/O steps."""

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

    def _request(
        self, method: str, path: str, json: Any, headers: Any, timeout: Any
    ) -> httpx.Request:
        all_headers = {"Accept": "application/json"}
        if self.api_key:
            all_headers["Authorization"] = f"Bearer {self.api_key}"
        all_headers.update(headers or {})
        seconds = self.timeout if timeout is NOT_GIVEN else timeout
        return httpx.Request(
            method,
            f"{self.base_url}{path}",
            json=json,
            headers=all_headers,
            extensions={"timeout": httpx.Timeout(seconds).as_dict()},
        )

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Any = None,
        timeout: Any = NOT_GIVEN,
        stream: bool = False,
    ) -> Step[httpx.Response]:
        """Send with retries: connection errors and timeouts, and `should_retry` statuses,
        up to `max_retries` times; the last error is raised. A stream is retried only before
        its first byte (its status line)."""
        request = self._request(method, path, json, headers, timeout)
        for attempt in range(self.max_retries + 1):
            answer = yield _Send(request, stream)
            wait_headers = None
            if isinstance(answer, httpx.TimeoutException):
                err: Exception = APITimeoutError()
            elif isinstance(answer, httpx.TransportError):
                err = APIConnectionError(f"could not connect to {self.base_url}: {answer}")
            else:
                resp: httpx.Response = answer
                if resp.status_code < 400:
                    return resp
                err = _error(resp)
                wait_headers = resp.headers
                if not should_retry(resp):
                    raise err
            if attempt >= self.max_retries:
                raise err
            yield _Sleep(retry_delay(attempt, wait_headers))
        raise AssertionError("unreachable")

    def _models(self) -> Step[list[Model]]:
        resp = yield from self._send("GET", "/v1/models")
        return [Model.model_validate(m) for m in resp.json().get("data", [])]

    def _model_name(self, model: Any) -> Step[str]:
        if model is not NOT_GIVEN and model is not None:
            return str(model)
        if self._model is None:
            self._model = (yield from self._models())[0].id
        return self._model

    def _completion(
        self,
        kind: str,
        content: Messages,
        model: Any,
        extra_body: Any,
        extra_headers: Any,
        timeout: Any,
        kwargs: dict[str, Any],
    ) -> Step[Result]:
        name = yield from self._model_name(model)
        body = _build_body(kind, content, name, kwargs, extra_body, stream=False)
        resp = yield from self._send(
            "POST", _path(kind), json=body, headers=extra_headers, timeout=timeout
        )
        return Result.from_response(resp.json())

    def _open_stream(
        self,
        kind: str,
        content: Messages,
        model: Any,
        extra_body: Any,
        extra_headers: Any,
        timeout: Any,
        kwargs: dict[str, Any],
    ) -> Step[httpx.Response]:
        name = yield from self._model_name(model)
        body = _build_body(kind, content, name, kwargs, extra_body, stream=True)
        return (
            yield from self._send(
                "POST", _path(kind), json=body, headers=extra_headers, timeout=timeout, stream=True
            )
        )


def _drive_sync(http: httpx.Client, steps: Step[T]) -> T:
    answer: Any = None
    try:
        while True:
            step = steps.send(answer)
            if isinstance(step, _Sleep):
                time.sleep(step.seconds)
                answer = None
                continue
            try:
                answer = http.send(step.request, stream=step.stream)
                if step.stream and answer.status_code >= 400:
                    answer.read()
            except httpx.TransportError as exc:
                answer = exc
    except StopIteration as done:
        return done.value


async def _drive_async(http: httpx.AsyncClient, steps: Step[T]) -> T:
    answer: Any = None
    try:
        while True:
            step = steps.send(answer)
            if isinstance(step, _Sleep):
                await asyncio.sleep(step.seconds)
                answer = None
                continue
            try:
                answer = await http.send(step.request, stream=step.stream)
                if step.stream and answer.status_code >= 400:
                    await answer.aread()
            except httpx.TransportError as exc:
                answer = exc
    except StopIteration as done:
        return done.value


# ---------------------------------------------------------------- the two drivers


class Ponder(_Core):
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

    def models(self) -> list[Model]:
        """Served models and their strategy aliases (`model+strategy`)."""
        return _drive_sync(self._http, self._models())

    def chat(
        self,
        messages: Messages,
        *,
        model: Any = NOT_GIVEN,
        extra_body: Any = None,
        extra_headers: Any = None,
        timeout: Any = NOT_GIVEN,
        **kwargs: Any,
    ) -> Result:
        """A chat completion (a str is one user message). Other keywords: the `ponder` options
        (strategy, samples, answer, include_candidates, self_certainty, rpc, cntp) and any
        OpenAI parameter."""
        steps = self._completion(
            "chat", messages, model, extra_body, extra_headers, timeout, kwargs
        )
        return _drive_sync(self._http, steps)

    def complete(
        self,
        prompt: str,
        *,
        model: Any = NOT_GIVEN,
        extra_body: Any = None,
        extra_headers: Any = None,
        timeout: Any = NOT_GIVEN,
        **kwargs: Any,
    ) -> Result:
        """A raw-prompt completion (`/v1/completions`); keywords as for `chat`."""
        steps = self._completion(
            "completion", prompt, model, extra_body, extra_headers, timeout, kwargs
        )
        return _drive_sync(self._http, steps)

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
        steps = self._open_stream(kind, messages, model, extra_body, extra_headers, timeout, kwargs)
        resp = _drive_sync(self._http, steps)
        acc = StreamAccumulator(kind)
        try:
            for event in EventSource(resp).iter_sse():
                if delta := acc.feed(event.data):
                    yield delta
        except httpx.TransportError as exc:
            raise APIConnectionError(f"the stream was interrupted: {exc}") from exc
        finally:
            resp.close()
        yield acc.result()


class AsyncPonder(_Core):
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

    async def models(self) -> list[Model]:
        return await _drive_async(self._http, self._models())

    async def chat(
        self,
        messages: Messages,
        *,
        model: Any = NOT_GIVEN,
        extra_body: Any = None,
        extra_headers: Any = None,
        timeout: Any = NOT_GIVEN,
        **kwargs: Any,
    ) -> Result:
        steps = self._completion(
            "chat", messages, model, extra_body, extra_headers, timeout, kwargs
        )
        return await _drive_async(self._http, steps)

    async def complete(
        self,
        prompt: str,
        *,
        model: Any = NOT_GIVEN,
        extra_body: Any = None,
        extra_headers: Any = None,
        timeout: Any = NOT_GIVEN,
        **kwargs: Any,
    ) -> Result:
        steps = self._completion(
            "completion", prompt, model, extra_body, extra_headers, timeout, kwargs
        )
        return await _drive_async(self._http, steps)

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
        steps = self._open_stream(kind, messages, model, extra_body, extra_headers, timeout, kwargs)
        resp = await _drive_async(self._http, steps)
        acc = StreamAccumulator(kind)
        try:
            async for event in EventSource(resp).aiter_sse():
                if delta := acc.feed(event.data):
                    yield delta
        except httpx.TransportError as exc:
            raise APIConnectionError(f"the stream was interrupted: {exc}") from exc
        finally:
            await resp.aclose()
        yield acc.result()
