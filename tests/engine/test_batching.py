"""Continuous batching on the real SmolLM2 (engines/batcher.py): concurrent requests share
decode steps, a short request is not stuck behind a long one, a cancelled request does not
disturb the others, and a seeded request draws the same samples alone or beside others."""

from __future__ import annotations

import asyncio

from ponder.engines.llamacpp import LlamaCppEngine
from ponder.strategies import CntpOptions
from ponder.strategies.cntp_decode import cntp_run
from ponder.types import SamplingParams

SEA = [{"role": "user", "content": "Write one sentence about the sea."}]
STORY = [{"role": "user", "content": "Write a long story about a dragon."}]


def test_concurrent_requests_share_decode_steps(engine: LlamaCppEngine) -> None:
    p = SamplingParams(max_tokens=24, temperature=0.8, seed=3)
    q = SamplingParams(max_tokens=24, temperature=0.8, seed=8)

    async def go() -> tuple:
        before = engine.counters.shared_steps
        both = await asyncio.gather(
            engine.sample(engine.render_chat(SEA), p, 3),
            engine.sample(engine.render_chat(STORY), q, 2),
        )
        return both, engine.counters.shared_steps - before

    (a, b), shared = asyncio.run(go())
    assert shared > 0
    assert len(a.samples) == 3 and len(b.samples) == 2
    # same seed, same samples as each request alone (per-sequence RNG)
    alone_a = asyncio.run(engine.sample(engine.render_chat(SEA), p, 3))
    alone_b = asyncio.run(engine.sample(engine.render_chat(STORY), q, 2))
    assert [s.token_ids for s in a.samples] == [s.token_ids for s in alone_a.samples]
    assert [s.token_ids for s in b.samples] == [s.token_ids for s in alone_b.samples]


def test_a_short_request_finishes_while_a_long_cntp_request_runs(engine: LlamaCppEngine) -> None:
    always = CntpOptions(max_trials=4, entropy_low=-2.0, entropy_high=-1.0)  # branch every step
    long_params = SamplingParams(max_tokens=64, temperature=0.8, seed=5)

    async def go() -> tuple[bool, float]:
        prompt = engine.render_chat(STORY)
        long = asyncio.ensure_future(cntp_run(engine, prompt, long_params, always, 1))
        await asyncio.sleep(1.0)
        short = await engine.sample(
            engine.render_chat(SEA), SamplingParams(max_tokens=8, seed=1), 1
        )
        running = not long.done()
        await long
        return running, short.queue_s

    running, queued = asyncio.run(go())
    assert running  # answered while the CNTP decode was still going
    assert queued < 1.0  # admitted at once: nothing holds the engine


def test_cancelling_one_request_leaves_the_other_intact(engine: LlamaCppEngine) -> None:
    p = SamplingParams(max_tokens=32, temperature=0.8, seed=12)
    alone = asyncio.run(engine.sample(engine.render_chat(SEA), p, 2))

    async def go() -> tuple:
        doomed = asyncio.ensure_future(
            engine.sample(engine.render_chat(STORY), SamplingParams(max_tokens=200, seed=1), 4)
        )
        kept = asyncio.ensure_future(engine.sample(engine.render_chat(SEA), p, 2))
        await asyncio.sleep(0.5)
        doomed.cancel()
        gen = await kept
        await asyncio.sleep(0.1)
        return gen, engine.in_flight

    gen, in_flight = asyncio.run(go())
    assert [s.token_ids for s in gen.samples] == [s.token_ids for s in alone.samples]
    assert in_flight == 0


def test_a_session_call_reuses_the_previous_calls_prefix(engine: LlamaCppEngine) -> None:
    """Within a session (CNTP, adaptive waves), a call whose prompt extends what an earlier
    call left takes that sequence over: only the new tokens are prefilled."""
    prompt = engine.render_chat(STORY)
    p = SamplingParams(max_tokens=6, seed=2)

    async def go() -> tuple[int, int]:
        async with engine.session() as session:
            first = await session.sample(prompt, p, 2)
            before = engine.counters.prefilled
            extended = prompt + first.samples[0].token_ids[:-1]  # the draft so far
            await session.sample(extended, p, 2)
            return engine.counters.prefilled - before, len(extended)

    prefilled, length = asyncio.run(go())
    assert prefilled <= 1 < length  # at most the last token, not the whole prompt


def test_requests_with_the_same_prompt_share_its_prefill(engine: LlamaCppEngine) -> None:
    """A request whose prompt is already in a running request's sequence copies that KV
    (shared cells) and starts from its stored row: nothing is prefilled twice, and its
    samples are the ones it draws alone."""
    prompt = engine.render_chat(STORY)
    long = SamplingParams(max_tokens=48, temperature=0.8, seed=40)
    p = SamplingParams(max_tokens=16, temperature=0.8, seed=41)
    alone = asyncio.run(engine.sample(prompt, p, 2))

    async def go() -> tuple:
        started = engine.counters.generated
        first = asyncio.ensure_future(engine.sample(prompt, long, 2))
        for _ in range(6000):  # until it decodes (its prompt is in the cache); 60 s at most
            if engine.counters.generated > started or first.done():
                break
            await asyncio.sleep(0.01)
        before = engine.counters.prefilled
        second = await engine.sample(prompt, p, 2)
        grown = engine.counters.prefilled - before
        await first
        return second, grown

    second, grown = asyncio.run(go())
    assert grown == 0
    assert [s.token_ids for s in second.samples] == [s.token_ids for s in alone.samples]


SEVEN = [
    SamplingParams(max_tokens=24, temperature=0.5 + 0.1 * i, seed=i + 1, stop=(" the",) * (i % 2))
    for i in range(7)
]
TALE = (
    "Once upon a time in a small village by the sea there lived an old fisherman who told "
    "stories to the children every evening about storms, whales and lost ships. "
) * 6


def _alone_then_together(
    engine: LlamaCppEngine, prompts: list[list[int]]
) -> tuple[list[list[int]], list[list[list[int]]]]:
    async def go() -> tuple[list[list[int]], list[list[list[int]]]]:
        alone = [
            (await engine.sample(p, sp, 1)).samples[0].token_ids
            for p, sp in zip(prompts, SEVEN, strict=True)
        ]
        rounds = []
        for _ in range(2):
            gens = await asyncio.gather(
                *(engine.sample(p, sp, 1) for p, sp in zip(prompts, SEVEN, strict=True))
            )
            rounds.append([g.samples[0].token_ids for g in gens])
        return alone, rounds

    return asyncio.run(go())


def test_seven_seeded_requests_on_one_long_prompt_equal_their_solo_runs(
    engine: LlamaCppEngine,
) -> None:
    """Issue 23 item 5: seven parameter sets on one 251-token prompt (eight prefill chunks)
    sent at once draw what each draws alone, in two rounds (on main before the fix, 4 of 7
    differed: llama.cpp's tiled attention kernel at 64-token chunks, batcher.FA_QUERY_TILE)."""
    prompt = engine.tokenize(TALE)[:251]
    alone, rounds = _alone_then_together(engine, [prompt] * 7)
    for got in rounds:
        assert got == alone


def test_seven_seeded_requests_on_different_long_prompts_equal_their_solo_runs(
    engine: LlamaCppEngine,
) -> None:
    prompts = [engine.tokenize(f"Chapter {i}. " + TALE)[: 240 + i] for i in range(7)]
    alone, rounds = _alone_then_together(engine, prompts)
    for got in rounds:
        assert got == alone


def test_a_short_request_is_not_stuck_behind_every_sample_of_a_large_one(
    engine: LlamaCppEngine,
) -> None:
    """Issue 23 item 4: a request of max_samples samples takes every sample's sequence while
    alone; a short request sent next is admitted at once (a spare sequence id), the large
    one's rows take turns with it (its share), and both draw what they draw alone."""
    big_p = SamplingParams(max_tokens=64, temperature=0.9, seed=70)
    short_p = SamplingParams(max_tokens=8, temperature=0.9, seed=71)
    story, sea = engine.render_chat(STORY), engine.render_chat(SEA)
    n = engine.max_samples

    async def go() -> tuple:
        big_alone = await engine.sample(story, big_p, n)
        short_alone = await engine.sample(sea, short_p, 1)
        deferred = engine.counters.deferred
        big = asyncio.ensure_future(engine.sample(story, big_p, n))
        while engine.counters.generated == 0 or not big_started(engine):
            await asyncio.sleep(0.01)
        short = await engine.sample(sea, short_p, 1)
        running = not big.done()
        return (
            big_alone,
            short_alone,
            await big,
            short,
            running,
            engine.counters.deferred - deferred,
        )

    big_alone, short_alone, big, short, running, deferred = asyncio.run(go())
    assert running  # the short request finished while the large one was still decoding
    assert short.queue_s < short.generate_s + 0.5  # admitted at once, not after the large one
    assert deferred > 0  # the large request's rows took turns
    assert short.samples[0].token_ids == short_alone.samples[0].token_ids
    assert [s.token_ids for s in big.samples] == [s.token_ids for s in big_alone.samples]


def big_started(engine: LlamaCppEngine) -> bool:
    """Whether the running request has every one of its samples live."""
    batcher = engine._batcher
    assert batcher is not None
    return any(len(r.live()) == r.samples for r in list(batcher.active))
