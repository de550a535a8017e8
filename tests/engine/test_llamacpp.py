"""The llama.cpp engine on the real SmolLM2: batching, seeds, greedy, and exact stats."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from ponder.engines.llamacpp import LlamaCppEngine, embedded_model_path
from ponder.errors import RequestTooLarge
from ponder.types import Sample, SamplingParams, confidence_stop

MESSAGES = [{"role": "user", "content": "Write one sentence about the sea."}]


def run(engine: LlamaCppEngine, params: SamplingParams, n: int, messages=MESSAGES):
    return asyncio.run(engine.sample(engine.render_chat(messages), params, n))


def test_chat_template_comes_from_the_model(engine: LlamaCppEngine) -> None:
    ids = engine.render_chat(MESSAGES)
    text = engine._model.detokenize(ids, special=True).decode()
    assert "<|im_start|>user" in text and text.rstrip().endswith("<|im_start|>assistant")


def test_n_samples_in_one_call_are_distinct(engine: LlamaCppEngine) -> None:
    gen = run(engine, SamplingParams(max_tokens=24, temperature=1.0, seed=11), 6)
    texts = [s.text for s in gen.samples]
    assert len(gen.samples) == 6 and [s.index for s in gen.samples] == list(range(6))
    assert len(set(texts)) >= 5
    assert gen.prompt_tokens == len(engine.render_chat(MESSAGES))
    for s in gen.samples:
        assert 1 <= s.n_tokens <= 24
        assert s.finish_reason in ("stop", "length")
        assert s.finish_reason == "stop" or s.n_tokens == 24


def test_same_seed_same_samples(engine: LlamaCppEngine) -> None:
    params = SamplingParams(max_tokens=20, temperature=0.9, seed=1234)
    a, b = run(engine, params, 4), run(engine, params, 4)
    assert [s.token_ids for s in a.samples] == [s.token_ids for s in b.samples]
    c = run(engine, SamplingParams(max_tokens=20, temperature=0.9, seed=99), 4)
    assert [s.token_ids for s in c.samples] != [s.token_ids for s in a.samples]


def test_no_seed_gives_fresh_randomness(engine: LlamaCppEngine) -> None:
    params = SamplingParams(max_tokens=20, temperature=1.0)
    a, b = run(engine, params, 2), run(engine, params, 2)
    assert [s.token_ids for s in a.samples] != [s.token_ids for s in b.samples]


def test_greedy_is_deterministic(engine: LlamaCppEngine) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.0)
    a, b = run(engine, params, 3), run(engine, params, 1)
    assert a.samples[0].token_ids == a.samples[1].token_ids == a.samples[2].token_ids
    assert a.samples[0].token_ids == b.samples[0].token_ids
    assert (a.samples[0].entropy_processed == 0).all()


def test_stats_are_sane(engine: LlamaCppEngine) -> None:
    gen = run(engine, SamplingParams(max_tokens=24, temperature=0.8, top_p=0.95, seed=5), 4)
    for s in gen.samples:
        assert len(s.logprob) == len(s.kl_uniform) == len(s.entropy_processed) == s.n_tokens
        assert (s.logprob <= 0).all()
        assert (s.kl_uniform >= 0).all()
        assert (s.entropy_processed >= 0).all()
        assert (s.logprob_processed <= 1e-6).all()
        assert s.self_certainty > 0


def test_stats_agree_with_an_independent_recomputation(engine: LlamaCppEngine) -> None:
    """Re-score prompt + sample with llama-cpp-python's high-level `Llama` (every row's logits
    kept, the same flash attention and the same calls of fewer than 64 rows as Ponder's
    prefill: batcher.FA_QUERY_TILE) and recompute the stats from its rows with scipy.

    Tolerance from measurement: with the build scripts/install.sh makes (the same AVX2
    kernels on every x86-64 CPU, AVX-512 ones included), the largest difference over 5 seeds,
    alone and beside 3 other requests, was 2.1e-6 (logprob and DeepConf confidence; Intel
    Sapphire Rapids). atol 1e-3 is 500 times that. (With a build tuned to an AVX-512 CPU, or a
    512-row re-score, kernels differ and so do the numbers, by up to ~0.4 nats.)"""
    from llama_cpp import Llama

    from ponder.engines.batcher import PREFILL_CHUNK

    params = SamplingParams(max_tokens=16, temperature=0.7, seed=3, confidence_top_k=20)
    prompt = engine.render_chat(MESSAGES)
    sample = asyncio.run(engine.sample(prompt, params, 1)).samples[0]
    llm = Llama(
        model_path=str(embedded_model_path()),
        n_ctx=512,
        n_batch=PREFILL_CHUNK,
        n_ubatch=PREFILL_CHUNK,
        flash_attn=True,
        logits_all=True,
        verbose=False,
    )
    llm.eval(prompt + sample.token_ids)
    rows = np.asarray(llm.scores[: len(prompt) + sample.n_tokens], dtype=np.float64)
    llm.close()
    n = sample.n_tokens
    z = rows[len(prompt) - 1 : len(prompt) - 1 + n]
    lse = logsumexp(z, axis=1)
    lp = z[np.arange(n), sample.token_ids] - lse
    kl = lse - z.mean(axis=1) - np.log(z.shape[1])
    q = softmax(z / 0.7, axis=1)
    ent = -(q * np.log(np.clip(q, 1e-300, None))).sum(axis=1)
    lpp = np.log(q[np.arange(n), sample.token_ids])
    conf = -(np.sort(z, axis=1)[:, -20:] - lse[:, None]).mean(axis=1)  # DeepConf, top 20
    for got, want in [
        (sample.logprob, lp),
        (sample.kl_uniform, kl),
        (sample.entropy_processed, ent),
        (sample.logprob_processed, lpp),
        (sample.confidence, conf),
    ]:
        np.testing.assert_allclose(got, want, atol=1e-3)
    # Off by one position (the classic bug) is far outside that.
    shifted = rows[len(prompt) : len(prompt) + n - 1]
    lp_shift = shifted[np.arange(n - 1), sample.token_ids[: n - 1]] - logsumexp(shifted, axis=1)
    assert np.abs(sample.logprob[: n - 1] - lp_shift).mean() > 1.0


def test_stop_strings_and_max_tokens(engine: LlamaCppEngine) -> None:
    base = run(engine, SamplingParams(max_tokens=30, temperature=0.0), 1).samples[0]
    assert len(base.text) > 10
    stop = base.text[5:8]
    cut = run(engine, SamplingParams(max_tokens=30, temperature=0.0, stop=(stop,)), 1).samples[0]
    assert cut.finish_reason == "stop"
    assert cut.text == base.text[: base.text.index(stop)]
    short = run(engine, SamplingParams(max_tokens=3, temperature=0.0), 1).samples[0]
    assert short.n_tokens == 3 and short.finish_reason == "length"


def test_streaming_yields_the_same_text(engine: LlamaCppEngine) -> None:
    params = SamplingParams(max_tokens=24, temperature=0.8, seed=21)
    prompt = engine.render_chat(MESSAGES)

    async def collect():
        return [d async for d in engine.stream(prompt, params)]

    deltas = asyncio.run(collect())
    whole = asyncio.run(engine.sample(prompt, params, 1)).samples[0]
    assert len([d for d in deltas if d.text]) > 3
    assert "".join(d.text for d in deltas) == whole.text
    assert deltas[-1].sample is not None and deltas[-1].sample.token_ids == whole.token_ids


def test_requests_that_do_not_fit_are_refused(engine: LlamaCppEngine) -> None:
    with pytest.raises(RequestTooLarge) as err:
        engine.check_fits(100, 1000, 16)
    assert err.value.param == "max_tokens"
    with pytest.raises(RequestTooLarge) as err:
        engine.check_fits(10, 10, 17)
    assert err.value.param == "samples"


def test_concurrent_requests_run_together_not_queued(engine: LlamaCppEngine) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.0)
    prompt = engine.render_chat(MESSAGES)

    async def both():
        return await asyncio.gather(
            engine.sample(prompt, params, 2), engine.sample(prompt, params, 2)
        )

    a, b = asyncio.run(both())
    assert a.samples[0].token_ids == b.samples[0].token_ids
    # continuous batching: neither waited for the other (engines/batcher.py)
    assert max(a.queue_s, b.queue_s) < 0.5 * min(a.generate_s, b.generate_s)


def test_prompt_logprobs_equal_llama_cpps_own_forward_pass(engine: LlamaCppEngine) -> None:
    """Scoring a prompt (echo + logprobs) gives llama-cpp-python's own numbers for the same
    model and attention kernel: its high-level `Llama` with every row's logits kept."""
    from llama_cpp import Llama
    from scipy.special import log_softmax

    from ponder.engines.batcher import PREFILL_CHUNK

    text = " ".join(f"Item {i} is a small red box." for i in range(20))  # > one prefill chunk
    ids = engine.tokenize(text)
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=3)
    gen = asyncio.run(engine.sample(ids, params, 1))
    scored = gen.prompt_logprobs
    assert scored is not None and len(scored.logprob) == len(ids) > 128
    assert scored.logprob[0] is None and scored.top[0] is None
    assert "".join(scored.tokens_text) == text
    ref = Llama(
        model_path=str(embedded_model_path()),
        n_ctx=1024,
        n_batch=PREFILL_CHUNK,  # the same calls as Ponder's prefill (batcher.FA_QUERY_TILE)
        n_ubatch=PREFILL_CHUNK,
        flash_attn=True,  # the kernel llama.cpp picks for Ponder's context here
        logits_all=True,
        verbose=False,
    )
    try:
        ref.eval(ids)
        z = log_softmax(np.asarray(ref.scores[: len(ids)], dtype=np.float64), axis=1)
    finally:
        ref.close()
    want = z[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose(np.array(scored.logprob[1:], dtype=np.float64), want, atol=1e-4)
    for i in (1, 70, len(ids) - 1):
        top = scored.top[i]
        assert top is not None and len(top) == 3
        best = int(np.argmax(z[i - 1]))
        assert top[0][0] == engine.detokenize([best], special=True)
        assert top[0][1] == pytest.approx(z[i - 1, best], abs=1e-4)


def test_long_token_pieces_keep_their_text(engine: LlamaCppEngine) -> None:
    """Pieces longer than 64 bytes exist in SmolLM2's vocabulary (80 '#'s is one token)."""
    ids = engine.tokenize("#" * 80, add_special=False)
    assert len(ids) == 1
    assert engine.detokenize(ids) == "#" * 80


def test_raw_text_parses_special_tokens_chat_content_does_not(engine: LlamaCppEngine) -> None:
    """A completion prompt is the caller's own text: template markers in it are special
    tokens (as in vLLM and llama.cpp's server); chat content cannot forge them."""
    eos = engine.tokenizer_info()["eos_token"]
    assert engine.tokenize(eos, add_special=False) == [engine._model.token_eos()]
    raw = engine.tokenize("<|im_start|>user\nhi<|im_end|>\n", add_special=False)
    assert engine.detokenize(raw, special=True) == "<|im_start|>user\nhi<|im_end|>\n"
    chat = engine.render_chat([{"role": "user", "content": "<|im_end|>"}])
    assert chat.count(engine._model.token_eos()) == 2  # the system turn's and the user turn's


def test_confidence_stop_rule_stops_where_the_window_falls_below(engine: LlamaCppEngine) -> None:
    """DeepConf online's engine rule: the same seeded trace, drawn with a bar its own window
    means cross, ends right at the first failing window (tokens never generated past it);
    without `confidence_top_k` nothing is recorded."""
    prompt = engine.render_chat(MESSAGES)
    base = SamplingParams(max_tokens=40, temperature=0.7, seed=9, confidence_top_k=20)
    full = asyncio.run(engine.sample(prompt, base, 1)).samples[0]
    assert full.confidence.shape == (full.n_tokens,) and (full.confidence > 0).all()
    window = 4
    means = np.convolve(full.confidence, np.ones(window) / window, mode="valid")
    bar = float(np.median(means))  # some window falls below it, not the first one necessarily
    expect = confidence_stop(full.confidence, window, bar)
    assert expect is not None and expect < full.n_tokens
    stopped = dataclasses.replace(base, stop_confidence=(window, bar))
    cut = asyncio.run(engine.sample(prompt, stopped, 1)).samples[0]
    assert cut.finish_reason == "confidence" and cut.n_tokens == expect
    assert cut.token_ids == full.token_ids[:expect]
    plain = dataclasses.replace(base, confidence_top_k=0)
    assert asyncio.run(engine.sample(prompt, plain, 1)).samples[0].confidence.size == 0


def test_a_call_stops_when_on_sample_says_enough(engine: LlamaCppEngine) -> None:
    """Adaptive stopping's hook: the engine shows each sample as it finishes; once the hook
    says enough, the samples still running stop where they are ("cancelled"), shorter than
    they would have been, and the engine is free for the next call."""
    prompt = engine.render_chat(MESSAGES)
    params = SamplingParams(max_tokens=64, temperature=1.0, seed=4)
    full = asyncio.run(engine.sample(prompt, params, 6))
    seen: list[int] = []

    def first(s: Sample) -> bool:
        seen.append(s.index)
        return True

    cut = asyncio.run(engine.sample(prompt, params, 6, on_sample=first))
    shortest = min(range(6), key=lambda i: full.samples[i].n_tokens)
    done = [s for s in cut.samples if s.finish_reason != "cancelled"]
    assert seen and {s.index for s in done} == set(seen)
    assert cut.samples[shortest].token_ids == full.samples[shortest].token_ids
    for s in cut.samples:
        if s.finish_reason == "cancelled":
            whole = full.samples[s.index]
            assert s.n_tokens < whole.n_tokens and s.token_ids == whole.token_ids[: s.n_tokens]
    assert sum(s.n_tokens for s in cut.samples) < sum(s.n_tokens for s in full.samples)
    again = asyncio.run(engine.sample(prompt, params, 6))  # nothing left behind in the cache
    assert [s.token_ids for s in again.samples] == [s.token_ids for s in full.samples]
