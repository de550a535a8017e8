"""Shared fixtures: the real embedded model (llama.cpp + SmolLM2) and a real server."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def engine():
    """The llama.cpp engine on the embedded SmolLM2, started once for the engine tests."""
    from ponder.engines.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(None, "smollm2", n_ctx=8192, max_samples=16)
    asyncio.run(eng.start())
    yield eng
    asyncio.run(eng.close())


class Server:
    def __init__(self, base_url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.base_url = base_url
        self.proc = proc
        self.log = log


def start_server(
    tmp: Path, env: dict[str, str] | None = None, ready_timeout_s: float = 180
) -> Server:
    """`ponder serve` in a subprocess on a free loopback port; returns once /ready is 200."""
    port = free_port()
    log = tmp / f"server-{port}.log"
    full_env = {**os.environ, "PONDER_LOG_LEVEL": "warning", **(env or {})}
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ponder.cli", "serve", "--port", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()}")
        try:
            ready = httpx.get(f"{base}/ready", timeout=2)
            if ready.status_code == 200:
                return Server(base, proc, log)
            if "failed to start" in ready.text:
                proc.kill()
                raise RuntimeError(f"engine failed to start:\n{log.read_text()}")
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server not ready in time:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("server"),
        {
            "PONDER_MAX_SAMPLES": "16",
            "PONDER_CONTEXT_TOKENS": "8192",
            "PONDER_ALIASES": "vote4=smollm2+majority_vote@4:t0.7",
        },
    )
    yield srv
    stop_server(srv)


# ---------------------------------------------------------------- cost tiers (markers)

SLOW = (
    "tests/api/test_fuzz.py",
    "tests/security/test_hostile.py::test_a_cancelled_long_prefill_frees_the_engine",
    "tests/upstream/",
    "tests/vllm/",
)
"""Tests (or modules) that take over ~10 s each on an idle 2-core machine, from CI's
`--durations=15` (fuzzing 85 s, CNTP over HTTP upstream 57 s, a cancelled long prefill 16 s,
the upstream and vLLM suites' servers)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """unit: pure, no model (tests/unit, seconds); server: the real model, in process or
    behind a live server; slow: the SLOW ones, a subset of server."""
    for item in items:
        node = item.nodeid
        if node.startswith("tests/unit/"):
            item.add_marker(pytest.mark.unit)
        else:
            item.add_marker(pytest.mark.server)
        if any(node.startswith(s) for s in SLOW):
            item.add_marker(pytest.mark.slow)
