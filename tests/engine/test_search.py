"""Step-level search on the real SmolLM2 through the llama.cpp engine (issue 28 item 5): each
step continues its parent's cached sequence, so only the step's last token is prefilled, not
the shared prefix; steps end at the delimiter; every generated token is in the result."""

from __future__ import annotations

import asyncio
import contextlib

from ponder.engines.llamacpp import LlamaCppEngine
from ponder.strategies import REGISTRY, Hooks, Job, SelectOptions
from ponder.strategies.search import BeamOptions, ParticlesOptions
from ponder.strategies.search_run import BEAM
from ponder.types import SamplingParams

MESSAGES = [
    {
        "role": "user",
        "content": "A shop sells pens at 3 dollars each. Sam buys 4 pens and pays with a "
        "20 dollar note. How much change does he get? Explain each step on its own line.",
    }
]


def run(engine: LlamaCppEngine, name: str, own: object, samples: int = 4, seed: int = 7):
    prompt = engine.render_chat(MESSAGES)
    job = Job(
        strategy=name,
        prompt_ids=prompt,
        params=SamplingParams(max_tokens=160, temperature=0.9, seed=seed),
        samples=samples,
        options=SelectOptions(own=own),  # type: ignore[arg-type]
        details=True,
    )
    before = engine.counters.prefilled
    decided = asyncio.run(REGISTRY[name].run(job, engine, Hooks()))
    return decided, engine.counters.prefilled - before, len(prompt)


def test_steps_continue_their_parents_cached_prefix(engine: LlamaCppEngine) -> None:
    decided, prefilled, prompt = run(engine, "beam", BeamOptions(delimiter="\n", max_steps=6))
    search = decided.decision.notes["search"]
    assert search["steps"] >= 2, search  # the measure needs steps after the first
    # Without sharing every call prefills its whole prompt (the prompt and the partial
    # solution): prefix_tokens. With it: at most the prompt once, then each call its parent's
    # last sampled token (the rest of the prefix is its parent's cached sequence).
    assert prefilled <= prompt + search["calls"], (prefilled, prompt, search)
    assert search["prefix_tokens"] > prompt * search["calls"] > prefilled


def test_steps_end_at_the_delimiter_and_every_token_is_counted(engine: LlamaCppEngine) -> None:
    decided, _, _ = run(engine, "particles", ParticlesOptions(delimiter="\n", max_steps=5))
    notes = decided.decision.notes["search"]
    nodes = [n for step in notes["tree"] for n in step["nodes"]]
    steps = {n["id"]: n for n in nodes}  # particles list a node once per step it is in
    gen = decided.generation
    assert gen.completion_tokens == notes["step_tokens"]
    assert notes["step_tokens"] >= sum(n["tokens"] for n in steps.values())
    for s in gen.samples:  # the whole solution's text is its tokens' text
        whole = engine.detokenize(s.token_ids)
        assert whole.startswith(s.text) or s.finish_reason == "stop"
    ended = [n for n in steps.values() if n["finish"] is None]
    for n in ended:  # an unfinished step stopped at its delimiter or its budget
        assert n["tokens"] >= 64 or "\n" not in n["text"].strip()


def test_a_search_is_cancelled_with_its_request(engine: LlamaCppEngine) -> None:
    """Cancelling the task that runs a search (a client gone, a deadline) stops its engine
    work: cancelled once its first step is done, while the second step's calls run (8
    samples x 100 tokens, end of generation ignored), the engine generates far fewer than
    those 800 tokens before it is idle again."""
    prompt = engine.render_chat(MESSAGES)
    job = Job(
        strategy="beam",
        prompt_ids=prompt,
        params=SamplingParams(max_tokens=400, temperature=0.9, seed=1, ignore_eos=True),
        samples=8,
        options=SelectOptions(own=BeamOptions(beams=2, max_step_tokens=100, delimiter="@@@")),
    )

    async def main() -> tuple[bool, int, int]:
        stepped = asyncio.Event()
        hooks = Hooks(on_progress=lambda done, total: stepped.set())
        task = asyncio.ensure_future(BEAM.run(job, engine, hooks))
        await stepped.wait()
        await asyncio.sleep(0.2)  # the second step's calls are admitted
        busy = engine.in_flight
        generated = engine.counters.generated
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for _ in range(1200):  # a minute at most
            if not engine.in_flight:
                break
            await asyncio.sleep(0.05)
        return task.cancelled() and busy > 0, engine.counters.generated - generated, busy

    cancelled, after, busy = asyncio.run(main())
    assert cancelled and after < 400, (after, busy)
