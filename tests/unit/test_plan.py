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
