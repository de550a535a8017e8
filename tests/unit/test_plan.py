"""Settings and request planning that need no engine output (pure checks)."""

from __future__ import annotations

import pytest

from ponder.api.errors import ApiError
from ponder.api.plan import parse_model
from ponder.config import Settings


def test_parse_model_aliases() -> None:
    assert parse_model("smollm2", "smollm2") == (None, None)
    assert parse_model("smollm2+rpc", "smollm2") == ("rpc", None)
    assert parse_model("smollm2+majority_vote@16", "smollm2") == ("majority_vote", 16)
    for bad, status in [
        ("gpt-4", 404),
        ("smollm2+magic", 404),
        ("smollm2+rpc@0", 400),
        ("smollm2+rpc@x", 400),
    ]:
        with pytest.raises(ApiError) as err:
            parse_model(bad, "smollm2")
        assert err.value.status == status and err.value.param == "model"


def test_an_unknown_default_strategy_stops_the_app_factory() -> None:
    from ponder.api import create_app

    with pytest.raises(ValueError, match="unknown default strategy 'magic'"):
        create_app(Settings(default_strategy="magic"))


def test_stop_strings_are_bounded_in_count_and_length_before_any_work() -> None:
    """Issue 23 item 3: a stop string over MAX_STOP_CHARS is a 400 from check_bounds (the
    cheap checks that run before rendering, tokenizing or generating)."""
    from ponder.api.checks import MAX_STOP, MAX_STOP_CHARS, check_bounds
    from ponder.api.schemas import ChatCompletionRequest

    def req(stop: object) -> ChatCompletionRequest:
        return ChatCompletionRequest.model_validate(
            {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "stop": stop}
        )

    check_bounds(req(["x" * MAX_STOP_CHARS] * MAX_STOP), Settings())
    for bad in (["x" * (MAX_STOP_CHARS + 1)], "y" * 60_000, ["z"] * (MAX_STOP + 1)):
        with pytest.raises(ApiError) as err:
            check_bounds(req(bad), Settings())
        assert err.value.status == 400 and err.value.param == "stop"
