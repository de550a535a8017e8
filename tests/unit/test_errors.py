"""One root for every error Ponder raises on purpose (errors.PonderError): each subclass
carries its HTTP status, OpenAI code and param, the one envelope builder reads them, and an
error inside a stream carries its status so a client need not guess it from `type`."""

from __future__ import annotations

import json

import pytest

from ponder.answers import AnswerPatternError
from ponder.api.errors import ApiError, ClientGone, error_response, to_api_error
from ponder.api.service import _error_event
from ponder.errors import (
    EngineError,
    EngineNotReady,
    InvalidRequest,
    PonderError,
    RequestTooLarge,
    UnsupportedRequest,
    UpstreamError,
)
from ponder_client._streaming import _status_of


@pytest.mark.parametrize(
    ("exc", "status", "code", "param"),
    [
        (EngineError("boom"), 500, "engine_error", None),
        (EngineNotReady("loading"), 503, "engine_not_ready", None),
        (RequestTooLarge("too long", "max_tokens"), 400, "context_length_exceeded", "max_tokens"),
        (UnsupportedRequest("no seed", "seed"), 400, "unsupported_parameter", "seed"),
        (
            InvalidRequest("bad", "ponder.deepconf.keep"),
            400,
            "invalid_value",
            "ponder.deepconf.keep",
        ),
        (UpstreamError("down"), 502, "upstream_error", None),
        (UpstreamError("slow", 504), 504, "upstream_timeout", None),
        (AnswerPatternError("does not compile"), 400, "invalid_pattern", "ponder.answer.pattern"),
        (ClientGone(), 499, "client_closed", None),
        (
            ApiError(404, "no such model", param="model", code="model_not_found"),
            404,
            "model_not_found",
            "model",
        ),
    ],
)
def test_every_error_carries_its_status_code_and_param(
    exc: PonderError, status: int, code: str, param: str | None
) -> None:
    assert isinstance(exc, PonderError)
    r = error_response(exc)
    body = json.loads(bytes(r.body))["error"]
    assert r.status_code == status and body["code"] == code and body["param"] == param
    event = json.loads(_error_event(exc)[len("data: ") :])["error"]
    assert event["status"] == status and event["code"] == code


def test_an_engine_failure_says_so_and_anything_else_is_a_bare_500() -> None:
    assert json.loads(bytes(error_response(EngineError("kv full")).body))["error"]["message"] == (
        "engine error: kv full"
    )
    err = to_api_error(KeyError("secret detail"))
    assert err.status == 500 and "secret" not in err.public
    assert EngineNotReady("x").headers == {"Retry-After": "5"}


def test_the_client_reads_a_streamed_errors_status() -> None:
    """A 404 or 413 inside a stream stays a 404 or 413 for the SDK (it used to become 400,
    guessed from `type`); without `status`, the guess remains."""
    assert _status_of({"type": "invalid_request_error", "status": 404}) == 404
    assert _status_of({"type": "invalid_request_error", "status": 413}) == 413
    assert _status_of({"type": "invalid_request_error"}) == 400
    assert _status_of({"type": "invalid_request_error", "status": "x"}) == 400
