"""Schemathesis against /openapi.json of a real server (tiny limits so valid requests are fast):
no 5xx other than 503/504, responses conform to the schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from ..conftest import Server, start_server, stop_server

schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (test extra)")
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = {"POST": 520, "GET": 40}  # parameterless GETs yield one case each
RUN: dict[str, int] = {}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("fuzz"),
        {
            "PONDER_MAX_SAMPLES": "2",
            "PONDER_MAX_TOKENS_LIMIT": "4",
            "PONDER_MAX_REQUEST_TOKENS": "8",
            "PONDER_DEFAULT_MAX_TOKENS": "4",
            "PONDER_REQUEST_TIMEOUT_S": "30",
            "PONDER_CONTEXT_TOKENS": "4096",
        },
    )
    yield srv
    stop_server(srv)


def test_fuzz_openapi(fuzz_server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    checks = [
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        response_headers_conformance,
    ]
    operations = [r.ok() for r in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions"}
    for op in operations:

        @settings(
            max_examples=EXAMPLES.get(op.method.upper(), 5),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @given(case=op.as_strategy())
        def run(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(base_url=fuzz_server.base_url, timeout=60)
            RUN[case.operation.label] = RUN.get(case.operation.label, 0) + 1
            status = response.status_code
            assert status < 500 or status in (503, 504), (case.as_curl_command(), response.text)
            case.validate_response(response, checks=checks)

        run()
    print(f"fuzzing cases run: {sum(RUN.values())} ({RUN})")
    assert sum(RUN.values()) >= 1000


VALID = {
    "/v1/chat/completions": [
        {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "What is 2 + 2?"}],
            "max_tokens": 4,
            "logprobs": True,
            "top_logprobs": 2,
            "ponder": {"strategy": "majority_vote", "samples": 2, "include_candidates": True},
        },
        {
            "model": "smollm2+self_certainty@2",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 3,
            "n": 2,
        },
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
            "ponder": {"strategy": "rpc", "samples": 2, "include_candidates": True},
        },
        {
            "model": "smollm2+cntp",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 4,
            "ponder": {"include_candidates": True, "cntp": {"max_trials": 2}},
        },
    ],
    "/v1/completions": [
        {"model": "smollm2", "prompt": "Once upon", "max_tokens": 2, "logprobs": 2},
        {
            "model": "smollm2",
            "prompt": [1, 504, 28],
            "max_tokens": 4,
            "ponder": {"strategy": "majority_vote", "samples": 2, "include_candidates": True},
        },
    ],
}


def test_real_success_bodies_match_the_published_schemas(fuzz_server: Server) -> None:
    """Random bodies rarely name the served model, so the fuzz run above mostly checks error
    bodies; these valid requests put every success shape (plain, each strategy, candidates,
    logprobs, n > 1, both routes) through the same schemathesis response checks."""
    schema = schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json")
    ops = {r.ok().path: r.ok() for r in schema.get_all_operations()}
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
    seen = 0
    for path, bodies in VALID.items():
        for body in bodies:
            case = ops[path].Case(body=body, media_type="application/json")
            response = case.call(base_url=fuzz_server.base_url, timeout=60)
            assert response.status_code == 200, response.text
            case.validate_response(response, checks=checks)
            seen += 1
    assert seen == 7
