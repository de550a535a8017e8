"""The errors engines and strategies raise, in one module (api/errors.py maps them to HTTP).

Ground floor: imports nothing of Ponder.
"""

from __future__ import annotations


class EngineError(Exception):
    """The engine failed while generating; the message is safe to show to a client."""


class EngineNotReady(EngineError):
    """The engine has not finished loading (or died)."""


class RequestTooLarge(EngineError):
    """The request does not fit the engine's context; `param` names the field to change."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class UnsupportedRequest(EngineError):
    """The engine, as configured, cannot honour a request field; `param` names it (400)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class InvalidRequest(Exception):
    """A request's settings cannot run as given (a strategy's own check); `param` names the
    field to change (400 invalid_value)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class UpstreamError(EngineError):
    """The upstream failed; `status` is what Ponder answers (502, or 504 for a timeout)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status
