"""Every error Ponder raises on purpose, under one root (`PonderError`); api/errors.py turns
any of them into the one OpenAI envelope, and anything else into a bare 500.

A subclass says what a client is told — its HTTP `status` and OpenAI `code` — and an instance
adds the `param` to change and any `headers` (e.g. `Retry-After`), as openai-python's errors
carry theirs. Ground floor: imports nothing of Ponder.
"""

from __future__ import annotations


class PonderError(Exception):
    """The root: a message safe to show to the client, with its status, code and param."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        param: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = headers

    @property
    def public(self) -> str:
        """The message the client reads."""
        return self.message


class EngineError(PonderError):
    """The engine failed while generating."""

    code = "engine_error"

    @property
    def public(self) -> str:
        return f"engine error: {self.message}" if self.status >= 500 else self.message


class EngineNotReady(EngineError):
    """The engine has not finished loading (or died): 503, retry shortly."""

    status, code = 503, "engine_not_ready"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class RequestTooLarge(EngineError):
    """The request does not fit the engine's context; `param` names the field to change."""

    status, code = 400, "context_length_exceeded"


class UnsupportedRequest(EngineError):
    """The engine, as configured, cannot honour a request field; `param` names it."""

    status, code = 400, "unsupported_parameter"


class InvalidRequest(PonderError):
    """A request's settings cannot run as given (a strategy's own check); `param` names the
    field to change."""

    status, code = 400, "invalid_value"


class UpstreamError(EngineError):
    """The upstream failed: 502, or 504 when it timed out."""

    status, code = 502, "upstream_error"

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(
            message, status=status, code="upstream_timeout" if status == 504 else "upstream_error"
        )
