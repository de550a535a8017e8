"""What long stop strings cost: per token on the engine's thread, and to a neighbour request.

    python benchmarks/bench_stops.py [--repeats 3] [--server-path DIR]

1. Per-token cost of the stream holdback with 16 stop strings, at 600 and 16,000 characters
   of output: main before issue 23 (a rescan of every stop's prefixes on every token, O(text
   x stop)) with 60,000-character stops, and `stops.StopMatcher` with 256-character stops
   (the new bound; longer ones are a 400).
2. Through a real server: a 16-token request alone, and sent while a stream with 16 stop
   strings of the longest accepted length has sent 3,000 characters (medians over --repeats).
`--server-path` runs another checkout's server/ for part 2 (before/after; a server before
the bound accepts --stop-chars 60000). Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx
from bench_concurrency import free_port
from bench_fairness import SHORT, ask, start

from ponder.api.checks import MAX_STOP_CHARS
from ponder.stops import StopMatcher


def old_holdback(text: str, stops: tuple[str, ...]) -> int:
    """stops.holdback on main before issue 23."""
    keep = len(text) - len(text.rstrip("\ufffd"))
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = max(keep, k)
                break
    return keep


def per_token_ms(fn, tokens: int) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    for _ in range(tokens):
        fn()
    return (time.perf_counter() - t) / tokens * 1e3


def micro() -> None:
    piece = "abcd"
    for chars in (600, 16_000):
        text = ("lorem ipsum " * (chars // 12 + 1))[:chars]
        old_stops = tuple(("x" * 60_000)[: 60_000 - 1] + str(i) for i in range(16))
        new_stops = tuple(
            ("x" * MAX_STOP_CHARS)[: MAX_STOP_CHARS - len(str(i))] + str(i) for i in range(16)
        )
        old = per_token_ms(lambda t=text, s=old_stops: old_holdback(t, s), 20)
        m = StopMatcher(new_stops)
        m.feed(text)
        new = per_token_ms(lambda m=m: (m.feed(piece), m.holdback), 2000)
        print(
            f"{chars:>6} chars of output: holdback per token {old:8.3f} ms (main, 16 x 60,000) "
            f"-> {new:.4f} ms (StopMatcher, 16 x {MAX_STOP_CHARS})"
        )


async def stream(client: httpx.AsyncClient, stop_chars: int, grown: asyncio.Event) -> None:
    """A long stream with 16 stop strings that never match; `grown` is set once it has sent
    EMITTED characters (the holdback's cost grows with the text on main before issue 23)."""
    stops = [("z" * stop_chars)[: stop_chars - len(str(i))] + str(i) for i in range(16)]
    body = {
        "model": "smollm2",
        "prompt": ", ".join(str(i) for i in range(1, 40)) + ",",  # greedy: it counts on
        "max_tokens": 4000,
        "temperature": 0,
        "stream": True,
        "stop": stops,
    }
    chars = 0
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    for choice in json.loads(line[6:]).get("choices", []):
                        chars += len(choice.get("text") or "")
                    if chars >= EMITTED:
                        grown.set()  # and go on streaming while the neighbour runs
    finally:
        if chars < EMITTED:
            print(f"(the stream ended after {chars} characters)")
        grown.set()


EMITTED = 3000


async def live(repeats: int, server_path: str | None, stop_chars: int) -> None:
    port = free_port()
    proc = start(port, 16, server_path)
    short = {"model": "smollm2", "messages": SHORT, "max_tokens": 16, "seed": 1}
    alone, beside = [], []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=3600) as c:
            await ask(c, short)
            for _ in range(repeats):
                alone.append(await ask(c, short))
                grown = asyncio.Event()
                s = asyncio.ensure_future(stream(c, stop_chars, grown))
                await grown.wait()
                beside.append(await ask(c, short))
                s.cancel()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    a, b = statistics.median(alone), statistics.median(beside)
    print(
        f"16-token request alone: {a:.2f} s; beside a stream with 16 x {stop_chars}-char stops "
        f"after {EMITTED} characters of it: {b:.2f} s ({b / a:.1f}x)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server-path", default=None)
    parser.add_argument("--stop-chars", type=int, default=MAX_STOP_CHARS)
    args = parser.parse_args()
    micro()
    asyncio.run(live(args.repeats, args.server_path, args.stop_chars))
