"""The one place where error bodies are built: OpenAI's envelope, for every failure."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import PonderError

log = logging.getLogger("ponder.api")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(PonderError):
    """An error of the HTTP layer itself, status first (`ApiError(404, "...", code=...)`)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param, status=status, code=code, headers=headers)


class ClientGone(PonderError):
    """The client disconnected before its response was ready (499, logged at INFO)."""

    status, code = 499, "client_closed"

    def __init__(self) -> None:
        super().__init__("client closed the request")


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}`. A message or param quoting the
    caller's text is made valid Unicode (a lone surrogate shown as `\\udXXX`), so the body
    can always be encoded."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {
        "error": {
            "message": _encodable(message),
            "type": kind,
            "param": None if param is None else _encodable(param),
            "code": code,
        }
    }


def _encodable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def to_api_error(exc: BaseException) -> PonderError:
    """What the client sees of any exception: a PonderError as it is (each carries its status,
    code and param); anything else a bare 500, logged."""
    if isinstance(exc, PonderError):
        return exc
    log.exception("unexpected error", exc_info=exc)
    return ApiError(500, "internal server error", code="internal_error")


def error_response(exc: BaseException) -> JSONResponse:
    err = to_api_error(exc)
    return JSONResponse(
        error_body(err.status, err.public, err.param, err.code),
        status_code=err.status,
        headers=err.headers,
    )


def validation_error(errors: Sequence[Any]) -> ApiError:
    """The 400 for a body that fails the request schema (FastAPI's or pydantic's `errors()`):
    the first problem, with its field path."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return ApiError(400, "request body is not valid JSON", code="invalid_json")
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # Pydantic appends the union member tried ("str", "list[str]"); keep the field path only.
    param = ".".join(p for p in loc if not p.startswith(("list[", "function-")) and p != "str")
    msg = first.get("msg", "invalid value")
    if loc and loc[0] == "prompt" and first.get("type") != "missing":
        param = "prompt"
        msg = _PROMPT_SHAPES
    elif param == "ponder.answer" and isinstance(first.get("input"), str):
        msg = f'must be an object, e.g. {{"format": "{first["input"]}"}}'
    return ApiError(400, f"{param or 'body'}: {msg}", param=param or None, code="invalid_value")


_PROMPT_SHAPES = (
    "must be a string, a list of one string, a list of token ids, or a list of one list of "
    "token ids (one prompt per request)"
)


def install_error_handlers(app: FastAPI) -> None:
    """Route every kind of failure through `error_response`."""

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = "not_found" if exc.status_code == 404 else None
        # keep Starlette's headers (a 405 carries `Allow`)
        headers = dict(exc.headers or {})
        return error_response(
            ApiError(exc.status_code, str(exc.detail), code=code, headers=headers)
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # FastAPI parses the body before any dependency runs: authenticate first, so a
        # caller without a valid key learns nothing about the body's checks (401, not 400).
        try:
            request.app.state.gate.identify(request)
        except ApiError as denied:
            return error_response(denied)
        return error_response(validation_error(exc.errors()))

    async def on_client_gone(request: Request, exc: Exception) -> JSONResponse:
        # Not a server error: one INFO line, counted as 499 in the request metrics.
        log.info("client closed the request: %s %s", request.method, request.url.path)
        return error_response(exc)

    app.add_exception_handler(ClientGone, on_client_gone)
    app.add_exception_handler(PonderError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_api_error)
