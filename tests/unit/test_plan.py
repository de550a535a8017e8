"""Settings and request planning that need no engine output (pure checks)."""

from __future__ import annotations

import pytest

from ponder.api.aliases import Alias, defined_aliases, parse_model
from ponder.api.errors import ApiError
from ponder.config import Settings


def test_parse_model_aliases() -> None:
    assert parse_model("smollm2", "smollm2") == Alias()
    assert parse_model("smollm2+rpc", "smollm2") == Alias("rpc")
    assert parse_model("smollm2+majority_vote@16", "smollm2") == Alias("majority_vote", 16)
    assert parse_model("smollm2+majority_vote@8:t0.7", "smollm2") == Alias("majority_vote", 8, 0.7)
    assert parse_model("smollm2+rpc:t1", "smollm2") == Alias("rpc", None, 1.0)
    defined = {"vote8": "smollm2+majority_vote@8:t0.7"}
    assert parse_model("vote8", "smollm2", defined) == Alias("majority_vote", 8, 0.7)
    for bad, status in [
        ("gpt-4", 404),
        ("smollm2+magic", 404),
        ("smollm2+rpc@0", 400),
        ("smollm2+rpc@x", 400),
        ("smollm2+rpc:t3", 400),
        ("smollm2+rpc:0.7", 400),
        ("smollm2+rpc:tnan", 400),
        ("vote8", 404),  # not defined here
    ]:
        with pytest.raises(ApiError) as err:
            parse_model(bad, "smollm2")
        assert err.value.status == status and err.value.param == "model"


def test_defined_aliases_are_checked_when_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ok = Settings(aliases="vote8=smollm2+majority_vote@8:t0.7, careful=smollm2+cntp")
    assert defined_aliases(ok) == {
        "vote8": "smollm2+majority_vote@8:t0.7",
        "careful": "smollm2+cntp",
    }
    path = tmp_path / "aliases.txt"
    path.write_text("# the team's\nvote8 = smollm2+majority_vote@8:t0.7\n")
    assert defined_aliases(Settings(aliases=f"@{path}")) == {
        "vote8": "smollm2+majority_vote@8:t0.7"
    }
    for bad in ("vote8", "x=smollm2+magic", "x=smollm2+rpc:t9", "a+b=smollm2+rpc", "x=smollm2"):
        with pytest.raises(ValueError, match="PONDER_ALIASES"):
            defined_aliases(Settings(aliases=bad))


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
