"""The exception tree. Every error the client raises is a PonderError:

    PonderError
    ├── APIConnectionError          the server could not be reached
    │   └── APITimeoutError         no answer within the timeout
    └── APIStatusError              the server answered with an error envelope
        ├── BadRequestError             400 (see .param)
        ├── AuthenticationError         401
        ├── PermissionDeniedError       403
        ├── NotFoundError               404 (unknown model or strategy)
        ├── PayloadTooLargeError        413
        ├── UnprocessableEntityError    422
        ├── RateLimitError              429
        └── InternalServerError         5xx
            └── ServiceUnavailableError 503 (not ready, overloaded)

`make_status_error(response)` is the one place a response becomes an exception.
"""

from __future__ import annotations

from typing import Any

import httpx


class PonderError(Exception):
    """Base class of every error raised by ponder_client."""


class APIConnectionError(PonderError):
    def __init__(self, message: str = "could not connect to the Ponder server") -> None:
        super().__init__(message)


class APITimeoutError(APIConnectionError):
    def __init__(self, message: str = "the request to the Ponder server timed out") -> None:
        super().__init__(message)


class APIStatusError(PonderError):
    """An error response: `status_code`, and the OpenAI envelope's message/type/param/code."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        body: Any = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{status_code}: {message}")
        self.message = message
        self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code
        self.body = body
        self.headers = headers or httpx.Headers()


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class PayloadTooLargeError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


class ServiceUnavailableError(InternalServerError):
    pass


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def make_status_error(status_code: int, body: Any, headers: httpx.Headers) -> APIStatusError:
    """The exception for an error response, from its status and OpenAI error envelope."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {"message": str(body) if body else f"HTTP {status_code}"}
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = InternalServerError if status_code >= 500 else APIStatusError
    return cls(
        str(err.get("message") or f"HTTP {status_code}"),
        status_code=status_code,
        type=err.get("type"),
        param=err.get("param"),
        code=err.get("code"),
        body=body,
        headers=headers,
    )
