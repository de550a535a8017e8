"""Model names: the served model, its aliases `model+strategy[@N][:tT]`, and the aliases an
operator defines by name (PONDER_ALIASES), which /v1/models lists with what each does. An
alias's `:tT` sets the sampling temperature whatever the client sends: clients that know only
a model name (lm-eval, chat UIs) often send temperature 0, which would make a vote one
greedy sample."""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from ..config import Settings
from ..strategies import STRATEGIES
from .errors import ApiError

ALIAS_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
"""What an operator's alias may be called (it appears in /v1/models and in logs)."""


class Alias(NamedTuple):
    """What a model name asks for beyond the model: strategy, samples, temperature."""

    strategy: str | None = None
    samples: int | None = None
    temperature: float | None = None


def parse_model(name: str, served: str, defined: dict[str, str] | None = None) -> Alias:
    """`model[+strategy[@N][:tT]]`, or an operator's alias by name; 404 for another model or
    an unknown strategy, 400 for a malformed count or temperature."""
    spec = (defined or {}).get(name, name)
    base, plus, rest = spec.partition("+")
    if base != served:
        raise ApiError(
            404,
            f"model '{name}' does not exist; this server serves '{served}' "
            f"(and aliases '{served}+<strategy>[@N][:tT]', see /v1/models)",
            param="model",
            code="model_not_found",
        )
    if not plus:
        return Alias()
    rest, colon, temp = rest.partition(":")
    strategy, at, count = rest.partition("@")
    if strategy not in STRATEGIES:
        raise ApiError(
            404,
            f"unknown strategy '{strategy}' in model alias; available: {', '.join(STRATEGIES)}",
            param="model",
            code="strategy_not_found",
        )
    samples = None
    if at:
        if not count.isdigit() or int(count) < 1:
            raise ApiError(
                400,
                f"'@{count[:16]}' in model alias is not a positive sample count",
                param="model",
                code="invalid_value",
            )
        samples = int(count)
    return Alias(strategy, samples, _temperature(temp) if colon else None)


def _temperature(text: str) -> float:
    try:
        value = float(text[1:]) if text.startswith("t") and len(text) <= 8 else -1.0
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 2.0:
        raise ApiError(
            400,
            f"':{text[:16]}' in model alias is not a temperature ':t<0 to 2>' (e.g. ':t0.7')",
            param="model",
            code="invalid_value",
        )
    return value


def defined_aliases(settings: Settings) -> dict[str, str]:
    """PONDER_ALIASES: `name=spec` pairs, comma-separated (or @file, one per line; `#`
    comments), read once. Each spec's strategy, count and temperature are checked when the
    server starts (create_app), so a bad one stops it; its model, at each request."""
    return _read_aliases((settings.aliases or "").strip())


@functools.lru_cache(maxsize=8)
def _read_aliases(raw: str) -> dict[str, str]:
    if raw.startswith("@"):
        with open(raw[1:], encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    else:
        lines = raw.split(",")
    out: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, spec = (x.strip() for x in line.partition("="))
        if not eq or not ALIAS_NAME.fullmatch(name) or "+" in name:
            raise ValueError(f"PONDER_ALIASES: '{line[:80]}' is not name=model+strategy[@N][:tT]")
        try:
            alias = parse_model(spec, spec.partition("+")[0])
        except ApiError as exc:
            raise ValueError(f"PONDER_ALIASES: {name}: {exc.public}") from None
        if alias.strategy is None:
            raise ValueError(f"PONDER_ALIASES: {name}: the spec names no strategy")
        out[name] = spec
    return out


def describe(alias: Alias) -> dict[str, object]:
    """What an alias does, for /v1/models (`ponder`): strategy, samples and temperature (None:
    the request's, or the server's default)."""
    return {
        "strategy": alias.strategy or "none",
        "samples": alias.samples,
        "temperature": alias.temperature,
    }
