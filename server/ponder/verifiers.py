"""External verifiers for strategy `verify` (docs/strategies.md, "External judges and reward
models"): servers the operator names in PONDER_VERIFIERS, never a URL from a request.

- `judge`: any OpenAI-compatible chat server (a bigger model behind vLLM, another Ponder):
  the verification prompt is sent as one user message with `max_tokens: 1`, `logprobs` and
  `top_logprobs: 20`; the score is P(Yes) from the verdict token's top logprobs, normalised
  over the Yes/No variants (as the model's own verdict is scored).
- `reward`: a reward or classification model served by vLLM's pooling API (`POST /classify`,
  vLLM 0.24-0.33): the question and the candidate as a user and an assistant message; the
  score is the last label's probability (a one-label reward head's own probability, or the
  "good" class of a two-label one).

Each candidate's call has its own timeout and retries (`timeout_s`, `retries`); a candidate
whose calls all fail has no score, and the failure is said in `ponder.usage.verifier.failed`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

TOP_K = 20
"""Top logprobs read for P(Yes): the Yes/No variants are among them whenever the model
answers either with any probability that matters."""

_YES, _NO = "yes", "no"


def yes_probability(top: Sequence[tuple[str, float]]) -> float | None:
    """P(Yes) normalised over the Yes/No variants of one position's top logprobs (raw, the
    model's own distribution): tokens whose text, stripped of spaces and punctuation and
    lower-cased, is "yes" or "no" ("Yes", " yes", "YES", ...). None when neither is among
    them (the verifier answered something else): no score, not a guess."""
    p_yes = p_no = 0.0
    for text, logprob in top:
        word = text.strip().strip(".,:;!").lower()
        if word == _YES:
            p_yes += math.exp(logprob)
        elif word == _NO:
            p_no += math.exp(logprob)
    if p_yes + p_no <= 0.0:
        return None
    return p_yes / (p_yes + p_no)


@dataclass(frozen=True)
class VerifierSpec:
    """One configured verifier."""

    name: str
    kind: Literal["judge", "reward"]
    url: str
    model: str
    timeout_s: float = 60.0
    retries: int = 1
    api_key_env: str | None = None
    """The environment variable holding its API key (sent as a bearer token), if it needs one."""


@dataclass
class Scored:
    """One candidate's verdict from an external verifier."""

    score: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    attempts: int = 0


def parse_verifiers(raw: str | None) -> dict[str, VerifierSpec]:
    """PONDER_VERIFIERS: a JSON object `{"name": {"kind", "url", "model", "timeout_s",
    "retries", "api_key_env"}}`, or `@path` of a file holding one. ValueError saying what is
    wrong (the server does not start)."""
    text = (raw or "").strip()
    if not text:
        return {}
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as fh:
            text = fh.read()
    try:
        given = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"PONDER_VERIFIERS is not JSON: {exc}") from None
    if not isinstance(given, dict):
        raise ValueError("PONDER_VERIFIERS is a JSON object of named verifiers")
    out = {}
    for name, spec in given.items():
        if not _NAME.fullmatch(str(name)) or not isinstance(spec, dict):
            raise ValueError(f"PONDER_VERIFIERS: '{str(name)[:64]}' is not name: {{...}}")
        unknown = set(spec) - {"kind", "url", "model", "timeout_s", "retries", "api_key_env"}
        if unknown:
            raise ValueError(f"PONDER_VERIFIERS: {name}: unknown fields {sorted(unknown)}")
        kind, url, model = spec.get("kind"), spec.get("url"), spec.get("model")
        if kind not in ("judge", "reward"):
            raise ValueError(f"PONDER_VERIFIERS: {name}: kind is 'judge' or 'reward'")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"PONDER_VERIFIERS: {name}: url is an http(s) URL")
        if not isinstance(model, str) or not model:
            raise ValueError(f"PONDER_VERIFIERS: {name}: model names the served model")
        timeout, retries = float(spec.get("timeout_s", 60.0)), int(spec.get("retries", 1))
        if not (0 < timeout <= 3600) or not (0 <= retries <= 5):
            raise ValueError(f"PONDER_VERIFIERS: {name}: timeout_s in (0, 3600], retries 0-5")
        out[str(name)] = VerifierSpec(
            str(name), kind, url.rstrip("/"), model, timeout, retries, spec.get("api_key_env")
        )
    return out


_CONFIGURED: dict[str, VerifierSpec] = {}


def configure(specs: dict[str, VerifierSpec]) -> None:
    """The server's verifiers (set when the app starts)."""
    _CONFIGURED.clear()
    _CONFIGURED.update(specs)


def get(name: str) -> VerifierSpec | None:
    return _CONFIGURED.get(name)


def names() -> list[str]:
    return sorted(_CONFIGURED)


async def score(
    spec: VerifierSpec, client: httpx.AsyncClient, prompt: str, question: str, response: str
) -> Scored:
    """One candidate's score, with the spec's retries (a failed or malformed reply is retried;
    an HTTP 4xx other than 408/429 is not)."""
    headers = {}
    if spec.api_key_env and os.environ.get(spec.api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[spec.api_key_env]}"
    last = "no attempt"
    for attempt in range(1, spec.retries + 2):
        try:
            if spec.kind == "judge":
                got = await _judge(spec, client, headers, prompt)
            else:
                got = await _reward(spec, client, headers, question, response)
            got.attempts = attempt
            return got
        except httpx.HTTPStatusError as exc:
            last = f"HTTP {exc.response.status_code}"
            if exc.response.status_code < 500 and exc.response.status_code not in (408, 429):
                break
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            last = type(exc).__name__ if isinstance(exc, httpx.HTTPError) else "malformed reply"
        if attempt <= spec.retries:
            await asyncio.sleep(min(0.25 * attempt, 2.0))
    return Scored(None, error=last, attempts=attempt)


async def _judge(
    spec: VerifierSpec, client: httpx.AsyncClient, headers: dict[str, str], prompt: str
) -> Scored:
    body = {
        "model": spec.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": TOP_K,
    }
    r = await client.post(
        f"{spec.url}/v1/chat/completions", json=body, headers=headers, timeout=spec.timeout_s
    )
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    content = data["choices"][0]["logprobs"]["content"]
    top = [(str(t["token"]), float(t["logprob"])) for t in content[0]["top_logprobs"]]
    usage = data.get("usage") or {}
    return Scored(
        yes_probability(top),
        int(usage.get("prompt_tokens", 0)),
        int(usage.get("completion_tokens", 0)),
    )


async def _reward(
    spec: VerifierSpec,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    question: str,
    response: str,
) -> Scored:
    body = {
        "model": spec.model,
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": response},
        ],
    }
    r = await client.post(
        f"{spec.url}/classify", json=body, headers=headers, timeout=spec.timeout_s
    )
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    probs = data["data"][0]["probs"]
    value = float(probs[-1])
    if not 0.0 <= value <= 1.0:
        raise ValueError("a probability outside [0, 1]")
    usage = data.get("usage") or {}
    return Scored(value, int(usage.get("prompt_tokens", 0)), 0)
