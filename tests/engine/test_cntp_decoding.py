"""CNTP decoding on the real SmolLM2 (ponder.strategies.cntp_decode over the llama.cpp engine)."""

from __future__ import annotations

import asyncio
import math

import pytest

from ponder.engines.llamacpp import LlamaCppEngine
from ponder.strategies import CntpOptions
from ponder.strategies.cntp_decode import cntp_run
from ponder.types import PUNCTUATION, SamplingParams

MESSAGES = [{"role": "user", "content": "Name three colours and say why you like them."}]
NEVER = CntpOptions(entropy_low=100.0, entropy_high=200.0)
ALWAYS = CntpOptions(entropy_low=-2.0, entropy_high=-1.0)


def decode(engine: LlamaCppEngine, opts: CntpOptions, max_tokens: int = 40, seed: int = 4, n=1):
    params = SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=seed)
    return asyncio.run(cntp_run(engine, engine.render_chat(MESSAGES), params, opts, n))


def test_trials_end_at_the_ten_punctuation_token_ids(engine: LlamaCppEngine) -> None:
    """docs/strategies.md section 5: the ids are `encode(c)[0]` for the ten marks."""
    ids = {engine.tokenize(c)[-1] for c in PUNCTUATION}
    assert engine._punct == frozenset(ids) and len(ids) == 10
    assert sorted(engine.detokenize([t]) for t in ids) == sorted(PUNCTUATION)


def test_thresholds_that_never_branch_draw_no_trials(engine: LlamaCppEngine) -> None:
    (r,) = decode(engine, NEVER)
    assert r.steps == [] and r.trial_tokens == 0 and r.unused_tokens == 0
    assert 0 < r.sample.n_tokens <= 40


def test_thresholds_that_always_branch(engine: LlamaCppEngine) -> None:
    (r,) = decode(engine, ALWAYS, max_tokens=48)
    s = r.sample
    assert len(r.steps) >= 2
    # every output token came from a chosen trial: segments start at the steps' positions
    starts = [st.position for st in r.steps]
    assert starts[0] == 0
    ends = [*starts[1:], s.n_tokens]
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        assert b > a
        final = k == len(starts) - 1
        # a trial ends at the first of the ten punctuation ids and at no earlier token (a
        # merged token that merely contains a mark, such as ".\n\n", does not end it)
        assert not any(t in engine._punct for t in s.token_ids[a : b - 1]), s.tokens_text[a:b]
        if not final:
            assert s.token_ids[b - 1] in engine._punct, (k, s.tokens_text[a:b])
        else:
            assert (
                s.token_ids[b - 1] in engine._punct or s.finish_reason == "stop" or s.n_tokens == 48
            )
    for st in r.steps:
        assert st.trials == 10
        assert st.perplexities[st.chosen] == min(st.perplexities)
        assert st.chosen == st.perplexities.index(min(st.perplexities))
    assert r.trial_tokens == sum(st.trial_tokens for st in r.steps)
    assert r.trial_tokens == s.n_tokens + r.unused_tokens  # nothing came from drafts


def test_trial_perplexities_are_from_processed_logprobs(engine: LlamaCppEngine) -> None:
    (r,) = decode(engine, ALWAYS, max_tokens=24)
    s, st = r.sample, r.steps[0]
    first = r.steps[1].position if len(r.steps) > 1 else s.n_tokens
    seg = s.logprob_processed[:first]
    assert st.perplexities[st.chosen] == pytest.approx(math.exp(-float(seg.mean())), rel=1e-5)


def test_same_seed_same_decode_and_stop_strings(engine: LlamaCppEngine) -> None:
    (a,) = decode(engine, CntpOptions(), seed=9)
    (b,) = decode(engine, CntpOptions(), seed=9)
    assert a.sample.token_ids == b.sample.token_ids
    assert [st.perplexities for st in a.steps] == [st.perplexities for st in b.steps]
    text = a.sample.text
    assert len(text) > 12
    stop = text[6:9]
    params = SamplingParams(max_tokens=40, temperature=0.8, seed=9, stop=(stop,))
    (c,) = asyncio.run(cntp_run(engine, engine.render_chat(MESSAGES), params, CntpOptions(), 1))
    assert c.sample.finish_reason == "stop" and c.sample.text == text[: text.index(stop)]


def test_several_decodes_use_consecutive_seeds(engine: LlamaCppEngine) -> None:
    results = decode(engine, CntpOptions(), max_tokens=24, seed=20, n=3)
    assert [r.sample.index for r in results] == [0, 1, 2]
    assert len({tuple(r.sample.token_ids) for r in results}) >= 2


def test_several_decodes_run_in_lockstep_batches(engine: LlamaCppEngine) -> None:
    """CNTP + SC sends every live decode's next draft or trial call at once, and the batcher
    decodes them in shared steps (its counters show steps carrying several requests)."""
    before = engine.counters.shared_steps
    opts = CntpOptions(max_trials=3, entropy_low=-2.0, entropy_high=-1.0)
    results = decode(engine, opts, max_tokens=24, seed=31, n=3)
    shared = engine.counters.shared_steps - before
    again = decode(engine, opts, max_tokens=24, seed=31, n=3)
    assert shared > 0  # the three decodes' calls shared decode steps
    for r in results:
        assert r.steps and all(st.trials == 3 for st in r.steps)
        for st in r.steps:
            assert st.perplexities[st.chosen] == min(st.perplexities)
        assert r.trial_tokens == r.sample.n_tokens + r.unused_tokens
    assert [r.sample.token_ids for r in results] == [r.sample.token_ids for r in again]
