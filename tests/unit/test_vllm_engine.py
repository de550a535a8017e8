"""The vLLM engine's CPU-side parts: parameter mapping, output conversion, stats bookkeeping,
the processor math against the llama.cpp engine's numpy reduction, abort and error paths.

Tests that need vLLM's own types or torch skip, by name, where those are not installed; the
rest run everywhere (vLLM's types are stood in for by plain objects with the same fields)."""

from __future__ import annotations

import asyncio
import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from scipy.special import logsumexp

from ponder.engines.base import punctuation_ids
from ponder.engines.chunked import cut
from ponder.engines.stats import processed_distribution, raw_stats
from ponder.engines.vllm import (
    VllmEngine,
    VllmOptions,
    engine_args_kwargs,
    sampling_kwargs,
    to_sample,
)
from ponder.engines.vllm_stats import StatsStore, approximate, combine
from ponder.errors import EngineError
from ponder.types import Sample, SamplingParams

HAS_VLLM = importlib.util.find_spec("vllm") is not None
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM, reason="needs the vllm package (pip install 'ponder[vllm]')"
)
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch (installed with vllm)")


@dataclass
class Lp:  # vllm.logprobs.Logprob's fields
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class Out:  # vllm.outputs.CompletionOutput's fields used here
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Lp]] | None
    finish_reason: str | None = "stop"
    stop_reason: Any = None


def piece(t: int) -> str:
    return f"<{t}>"


def test_engine_args() -> None:
    kw = engine_args_kwargs(
        VllmOptions(
            model="Qwen/Qwen2.5-0.5B-Instruct", served_name="q", max_num_seqs=64, max_model_len=4096
        )
    )
    assert kw["enable_prefix_caching"] is True and kw["max_num_seqs"] == 64
    assert kw["logprobs_mode"] == "raw_logprobs" and kw["max_model_len"] == 4096
    assert kw["logits_processors"] == ["ponder.engines.vllm_processor:PonderStatsProcessor"]
    assert kw["worker_extension_cls"] == "ponder.engines.vllm_stats.StatsWorkerExtension"
    off = engine_args_kwargs(VllmOptions(model="m", served_name="m", exact_stats=False))
    assert "logits_processors" not in off and "worker_extension_cls" not in off


def test_sampling_kwargs() -> None:
    p = SamplingParams(max_tokens=7, temperature=0.6, top_p=0.9, top_k=-1, seed=5, stop=("##",))
    kw = sampling_kwargs(p, 12, stats_key="req-1")
    assert kw["n"] == 1 and kw["seed"] == 12 and kw["max_tokens"] == 7
    assert kw["top_k"] == 0 and kw["stop"] == ["##"] and kw["logprobs"] == 0
    assert kw["extra_args"] == {"ponder_stats": "req-1"} and kw["output_kind"] == "FINAL_ONLY"
    approx = sampling_kwargs(p, None, stats_key=None, stream=True)
    assert approx["logprobs"] == 20 and "extra_args" not in approx and approx["seed"] is None
    assert approx["output_kind"] == "DELTA"
    trials = sampling_kwargs(
        SamplingParams(punct_stop=True), 1, stats_key=None, punct_ids=frozenset({13, 11})
    )
    assert trials["stop_token_ids"] == [11, 13] and trials["stop"] is None
    assert "stop_token_ids" not in kw
    assert sampling_kwargs(SamplingParams(seed=-1), -1, stats_key=None)["seed"] >= 0
    both = sampling_kwargs(SamplingParams(min_tokens=3, ignore_eos=True), 1, stats_key=None)
    assert both["min_tokens"] == 3 and both["ignore_eos"] is True  # vLLM's own options
    # vLLM raises T in (0, 0.01) to 0.01: Ponder sends (and computes with) the same value
    assert sampling_kwargs(SamplingParams(temperature=0.001), 1, stats_key=None)[
        "temperature"
    ] == pytest.approx(0.01)
    assert sampling_kwargs(SamplingParams(temperature=0.0), 1, stats_key=None)["temperature"] == 0


def test_punctuation_ids_are_the_first_id_of_each_mark() -> None:
    vocab = {".": [13], ",": [11], "\n": [198], "?": [30, 5], ")": []}
    ids = punctuation_ids(lambda c: vocab.get(c, [1000 + ord(c)]))
    assert {13, 11, 198, 30} <= ids and 5 not in ids and len(ids) == 9


@needs_vllm
def test_sampling_kwargs_build_real_vllm_sampling_params() -> None:
    from vllm.sampling_params import RequestOutputKind

    sp = VllmEngine._params(
        sampling_kwargs(SamplingParams(max_tokens=9, seed=3, punct_stop=True), 3, stats_key="k")
    )
    assert sp.max_tokens == 9 and sp.seed == 3 and sp.n == 1 and sp.logprobs == 0
    assert sp.output_kind == RequestOutputKind.FINAL_ONLY and sp.extra_args == {"ponder_stats": "k"}


def _logits(rows: int = 3, v: int = 300, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(rows, v)) * 2.5).astype(np.float32)


def _processor_stats_numpy(z: np.ndarray, params: SamplingParams) -> tuple[np.ndarray, ...]:
    """What PonderStatsProcessor records, computed with the llama.cpp engine's numpy code."""
    lse, kl = raw_stats(z)
    ent, log_z = [], []
    for r in range(z.shape[0]):
        ids, q = processed_distribution(z[r], params)
        ent.append(float(-(q * np.log(q)).sum()))
        zt = z[r].astype(np.float64) / params.temperature
        log_z.append(float(logsumexp(zt[ids])))
    return kl, np.array(ent), lse, np.array(log_z)


def test_combine_gives_processed_logprobs_from_raw_ones() -> None:
    z = _logits()
    params = SamplingParams(temperature=0.7, top_p=0.9)
    kl, ent, lse, log_z = _processor_stats_numpy(z, params)
    tokens = [int(np.argmax(z[r])) for r in range(3)]
    raw = np.array([z[r, t] - lse[r] for r, t in enumerate(tokens)], dtype=np.float32)
    stats = {
        "position": [0.0, 1.0, 2.0],
        "kl_uniform": list(kl),
        "entropy_processed": list(ent),
        "lse": list(lse),
        "log_z_processed": list(log_z),
    }
    per = combine(raw, stats, 0.7)
    assert per is not None
    for r, t in enumerate(tokens):
        ids, q = processed_distribution(z[r], params)
        expected = math.log(q[int(np.nonzero(ids == t)[0][0])])
        assert per["logprob_processed"][r] == pytest.approx(expected, abs=1e-4)
    np.testing.assert_allclose(per["kl_uniform"], kl, rtol=1e-6)
    stats["position"] = [0.0, 2.0, 3.0]  # a missing position -> fall back to approximation
    assert combine(raw, stats, 0.7) is None


@needs_torch
@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.7, top_p=0.9),
        SamplingParams(temperature=0.8, top_k=20),
        SamplingParams(temperature=0.9, min_p=0.05),
    ],
)
def test_processor_math_matches_the_numpy_reduction(params: SamplingParams) -> None:
    import torch

    from ponder.engines.vllm_stats import row_stats

    z = _logits(rows=4, v=500, seed=2)
    got = row_stats(
        torch.from_numpy(z),
        torch.full((4,), params.temperature),
        torch.full((4,), params.top_k, dtype=torch.long),
        torch.full((4,), params.top_p),
        torch.full((4,), params.min_p),
    ).numpy()
    kl, ent, lse, log_z = _processor_stats_numpy(z, params)
    np.testing.assert_allclose(got[:, 0], kl, rtol=1e-4)
    np.testing.assert_allclose(got[:, 2], lse, rtol=1e-5)
    if params.min_p == 0:  # vLLM applies min-p before top-k/top-p; numpy after: same here
        np.testing.assert_allclose(got[:, 1], ent, atol=1e-3)
        np.testing.assert_allclose(got[:, 3], log_z, atol=1e-4)


def test_stats_store_bookkeeping() -> None:
    store = StatsStore()
    store.record(["a", "b"], [0, 0], np.array([[1, 2, 3, 4], [5, 6, 7, 8]], dtype=np.float32))
    store.record(["a"], [1], np.array([[9, 10, 11, 12]], dtype=np.float32))
    store.record(["a"], [1], np.array([[13, 14, 15, 16]], dtype=np.float32))  # recompute wins
    got = store.pop(["a", "missing"])
    assert got["a"]["position"] == [0.0, 1.0]
    assert got["a"]["kl_uniform"] == [1.0, 13.0] and got["a"]["log_z_processed"] == [4.0, 16.0]
    assert got["missing"]["position"] == []
    assert len(store) == 1 and store.pop(["b"])["b"]["lse"] == [7.0] and len(store) == 0


def test_approximation_is_exact_with_the_whole_vocabulary_and_close_with_top_20() -> None:
    z = _logits(rows=2, v=200, seed=4)
    lse, kl = raw_stats(z)
    lp = z - lse[:, None]
    whole = [{t: float(lp[r, t]) for t in range(200)} for r in range(2)]
    tokens = [3, 7]
    per = approximate(whole, tokens, 200, 1.0)
    np.testing.assert_allclose(per["kl_uniform"], kl, rtol=1e-4)
    for r, t in enumerate(tokens):
        assert per["logprob_processed"][r] == pytest.approx(lp[r, t], abs=1e-5)
        p = np.exp(lp[r])
        assert per["entropy_processed"][r] == pytest.approx(-(p * lp[r]).sum(), abs=1e-4)
    peaked = (z * 4).astype(np.float32)
    lse_p, _ = raw_stats(peaked)
    lpp = peaked - lse_p[:, None]
    top = [
        dict(sorted(((t, float(lpp[r, t])) for t in range(200)), key=lambda x: -x[1])[:20])
        for r in range(2)
    ]
    approx = approximate(top, [int(np.argmax(peaked[r])) for r in range(2)], 200, 1.0)
    exact_ent = np.array([float(-(np.exp(lpp[r]) * lpp[r]).sum()) for r in range(2)])
    # Spreading the unseen tail evenly maximizes its entropy: an upper bound, here within 0.2.
    assert (approx["entropy_processed"] >= exact_ent - 1e-4).all()
    assert (approx["entropy_processed"] <= exact_ent + 0.2).all()


def _out(tokens: list[int], lps: list[float], **kw: Any) -> Out:
    return Out(
        0,
        kw.pop("text", "hello."),
        tokens,
        sum(lps),
        [{t: Lp(lp), 99: Lp(-9.0)} for t, lp in zip(tokens, lps, strict=True)],
        **kw,
    )


def test_to_sample_exact_and_approximate() -> None:
    params = SamplingParams(temperature=1.0)
    stats = {
        "position": [0.0, 1.0],
        "kl_uniform": [2.0, 3.0],
        "entropy_processed": [0.5, 0.1],
        "lse": [1.0, 1.0],
        "log_z_processed": [1.0, 1.0],
    }
    s, exact = to_sample(_out([5, 6], [-0.2, -0.1]), 0, params, 1000, stats, piece)
    assert exact and s.kl_uniform.tolist() == [2.0, 3.0]
    assert s.logprob_processed == pytest.approx([-0.2, -0.1], abs=1e-6)  # T=1: same as raw
    assert s.tokens_text == ["<5>", "<6>"] and s.mean_logprob == pytest.approx(-0.15)
    s2, exact2 = to_sample(_out([5, 6], [-0.2, -0.1]), 1, params, 1000, None, piece)
    assert not exact2 and s2.index == 1 and (s2.kl_uniform > 0).all()
    trial = SamplingParams(punct_stop=True)
    s3, _ = to_sample(_out([5], [-0.3], stop_reason=5), 0, trial, 1000, None, piece, {5})
    assert s3.finish_reason == "punct"
    s4, _ = to_sample(_out([5], [-0.3], stop_reason=5), 0, params, 1000, None, piece, {5})
    assert s4.finish_reason == "stop"  # not a trial: an ordinary stop
    with pytest.raises(EngineError):
        bad = _out([5, 6], [-0.2, -0.1])
        bad.logprobs = bad.logprobs[:1]
        to_sample(bad, 0, params, 1000, None, piece)


@needs_vllm
def test_to_sample_reads_real_vllm_outputs() -> None:
    from vllm.logprobs import Logprob
    from vllm.outputs import CompletionOutput

    out = CompletionOutput(
        index=0,
        text="Hi.",
        token_ids=[5, 6],
        cumulative_logprob=-0.3,
        logprobs=[{5: Logprob(-0.2)}, {6: Logprob(-0.1)}],
        finish_reason="stop",
    )
    s, exact = to_sample(out, 0, SamplingParams(), 1000, None, piece)
    assert s.token_ids == [5, 6] and not exact and s.logprob.tolist() == pytest.approx([-0.2, -0.1])


def test_client_side_cut_ends_trials_at_a_lone_mark_only() -> None:
    """The upstream engine sees token texts: a token that IS one of the ten marks ends a trial,
    a merged token that merely contains one (".\n\n", "),") does not."""
    texts = {1: "Hello", 2: ".\n\n", 3: "),", 4: " world", 5: ",", 6: " more"}
    s, _ = to_sample(
        _out([1, 2, 3, 4, 5, 6], [-0.1] * 6), 0, SamplingParams(), 100, None, texts.__getitem__
    )
    got, dropped = cut(s, SamplingParams(punct_stop=True))
    assert got.token_ids == [1, 2, 3, 4, 5] and dropped == 1 and got.finish_reason == "punct"


def test_chunk_cuts() -> None:
    stats = {
        "position": [0.0, 1.0, 2.0],
        "kl_uniform": [1.0] * 3,
        "entropy_processed": [0.1, 0.9, 0.2],
        "lse": [0.0] * 3,
        "log_z_processed": [0.0] * 3,
    }
    s, _ = to_sample(
        _out([1, 2, 3], [-0.1, -0.2, -0.3]),
        0,
        SamplingParams(),
        100,
        stats,
        lambda t: "." if t == 3 else "a",
    )
    got, dropped = cut(s, SamplingParams(stop_entropy=0.5))
    assert got.token_ids == [1] and dropped == 2 and got.finish_reason == "entropy"
    assert got.next_entropy == pytest.approx(0.9)
    same, none = cut(s, SamplingParams(stop_entropy=5.0))
    assert same is s and none == 0
    punct, dropped = cut(s, SamplingParams(punct_stop=True))
    assert punct is s and dropped == 0  # the punctuation token is the last one
    both, dropped = cut(s, SamplingParams(stop_entropy=0.5, punct_stop=True))
    assert both.finish_reason == "entropy" and both.token_ids == [1]


@dataclass
class FakeAsyncLLM:
    """Stands in for vllm AsyncLLM in pure unit tests of the engine's control flow."""

    hang: bool = False
    fail: bool = False
    aborted: list[str] = field(default_factory=list)
    finish: str = "stop"

    async def generate(self, prompt: Any, sp: Any, request_id: str):
        if self.fail:
            raise RuntimeError("engine core died")
        if self.hang:
            key = (sp.get("extra_args") or {}).get("ponder_stats")
            self.store.record([key], [0], np.zeros((1, 4), dtype=np.float32))
            await asyncio.sleep(3600)
        i = int(request_id.rsplit("-", 1)[1])
        key = (sp.get("extra_args") or {}).get("ponder_stats")
        if key:  # the processor's record for the one generated token
            self.store.record([key], [0], np.array([[2.0 + i, 0.3, 1.0, 1.0]], dtype=np.float32))
        scored = None
        if sp.get("prompt_logprobs") is not None:  # vLLM: None, then {id: Logprob} per token
            scored = [None] + [{t: _LP(-1.0 - t), 99: _LP(-0.1)} for t in prompt[1:]]
        sample = _out([10 + i], [-0.5], finish_reason=self.finish)
        out = {"outputs": [sample], "finished": True, "prompt_logprobs": scored}
        yield type("RO", (), out)()

    async def abort(self, ids: Any) -> None:
        self.aborted += list(ids)

    store: StatsStore = field(default_factory=StatsStore)

    async def collective_rpc(
        self, method: str, timeout: Any = None, args: tuple = (), kwargs: Any = None
    ) -> list[Any]:
        """What StatsWorkerExtension answers, from the stats `generate` recorded."""
        if method == "ponder_stats_count":
            return [len(self.store)]
        assert method == "ponder_pop_stats"
        return [self.store.pop(args[0])]


def _engine(fake: FakeAsyncLLM) -> VllmEngine:
    eng = VllmEngine(VllmOptions(model="m", served_name="m"))
    eng._engine = fake
    eng.n_vocab = 1000
    eng._params = lambda kw: kw  # type: ignore[method-assign]
    eng._prompt = lambda ids: ids  # type: ignore[method-assign]
    eng._piece = piece  # type: ignore[method-assign]
    return eng


def test_sample_runs_n_requests_with_consecutive_seeds() -> None:
    eng = _engine(FakeAsyncLLM())
    gen = asyncio.run(eng.sample([1, 2], SamplingParams(seed=7), 3))
    assert [s.token_ids for s in gen.samples] == [[10], [11], [12]]
    # the stats came back through collective_rpc, one row per sample, in sample order
    assert gen.exact is True
    assert [s.kl_uniform.tolist() for s in gen.samples] == [[2.0], [3.0], [4.0]]
    assert asyncio.run(eng.stats_held()) == 0


def test_sample_without_stats_is_approximate_and_says_so() -> None:
    eng = _engine(FakeAsyncLLM())
    eng.exact_stats = False
    gen = asyncio.run(eng.sample([1, 2], SamplingParams(seed=7), 2))
    assert gen.exact is False and all((s.kl_uniform > 0).all() for s in gen.samples)


def test_cancelled_request_aborts_every_sample() -> None:
    fake = FakeAsyncLLM(hang=True)
    eng = _engine(fake)

    async def go() -> None:
        task = asyncio.ensure_future(eng.sample([1], SamplingParams(), 4))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert len(fake.aborted) == 4 and all(a.startswith("ponder-") for a in fake.aborted)
    assert eng.in_flight == 0
    assert len(fake.store) == 0  # what the worker recorded for them was dropped


@dataclass
class _LP:  # vllm.logprobs.Logprob's field the engine reads
    logprob: float


def test_echo_scores_the_prompt_once_with_the_first_sample() -> None:
    eng = _engine(FakeAsyncLLM())
    eng._full_piece = piece  # type: ignore[method-assign]
    gen = asyncio.run(eng.sample([5, 6, 7], SamplingParams(prompt_logprobs=1), 3))
    scored = gen.prompt_logprobs
    assert scored is not None and scored.logprob == [None, -7.0, -8.0]
    assert scored.top == [None, [(piece(99), -0.1)], [(piece(99), -0.1)]]
    assert scored.tokens_text == [piece(t) for t in (5, 6, 7)]
    plain = asyncio.run(eng.sample([5, 6, 7], SamplingParams(), 1))
    assert plain.prompt_logprobs is None


def test_engine_failure_becomes_engine_error() -> None:
    fake = FakeAsyncLLM(fail=True)
    with pytest.raises(EngineError, match="engine core died"):
        asyncio.run(_engine(fake).sample([1], SamplingParams(), 2))
    assert len(fake.aborted) == 2


# ---------------------------------------------------------------- the processor itself


@dataclass
class _VP:  # the vllm.SamplingParams fields the processor reads
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    extra_args: dict | None = None


def _tracked(key: str, **kw: Any) -> _VP:
    return _VP(extra_args={"ponder_stats": key}, **kw)


@dataclass
class _Config:
    max_num_seqs: int = 8

    @property
    def scheduler_config(self) -> _Config:
        return self


@dataclass
class _Update:  # vllm.v1.sample.logits_processor.BatchUpdate
    batch_size: int
    removed: list = field(default_factory=list)
    added: list = field(default_factory=list)
    moved: list = field(default_factory=list)


class _Dir:  # MoveDirectionality members, by name
    def __init__(self, name: str) -> None:
        self.name = name


def _row_numbers(stats: dict) -> list[float]:
    return stats["lse"]


@needs_torch
def test_processor_v1_tracks_batch_indices_moves_and_positions() -> None:
    import torch

    from ponder.engines.vllm_processor import PonderStatsProcessor
    from ponder.engines.vllm_stats import STORE, row_stats

    STORE.pop(["a", "b", "c"])
    proc = PonderStatsProcessor(_Config(), torch.device("cpu"), False)
    assert proc.runner == "v1" and proc.is_argmax_invariant() is False
    out_a, out_b, out_c = [], [7], []  # the requests' live output-token lists
    proc.update_state(
        _Update(
            3,
            added=[
                (0, _tracked("a", temperature=0.5), None, out_a),
                (1, _tracked("b"), None, out_b),
                (2, _VP(), None, out_c),  # not tracked
            ],
        )
    )
    z = torch.from_numpy(_logits(rows=3, v=64, seed=1))
    assert proc.apply(z.clone()) is not None
    out_a.append(1)
    out_b.append(2)
    # request b leaves; c moves from index 2 to 1; a and c then swap
    proc.update_state(_Update(2, removed=[1], moved=[(2, 1, _Dir("UNIDIRECTIONAL"))]))
    proc.update_state(_Update(2, moved=[(0, 1, _Dir("SWAP"))]))
    z2 = torch.from_numpy(_logits(rows=2, v=64, seed=2))
    proc.apply(z2.clone())
    got = STORE.pop(["a", "b", "c"])
    assert got["a"]["position"] == [0.0, 1.0] and got["b"]["position"] == [1.0]
    assert got["c"]["position"] == []
    ref1 = row_stats(z, torch.tensor([0.5, 1.0, 1.0]), *_defaults(3)).numpy()
    ref2 = row_stats(z2, torch.tensor([1.0, 0.5]), *_defaults(2)).numpy()
    # a was row 0 in step 1 and row 1 (after the swap) in step 2, at its own temperature
    np.testing.assert_allclose(got["a"]["entropy_processed"], [ref1[0, 1], ref2[1, 1]], rtol=1e-5)
    np.testing.assert_allclose(got["b"]["kl_uniform"], [ref1[1, 0]], rtol=1e-5)
    # speculative-decoding rows (more rows than requests) are not tracked
    proc.apply(torch.zeros((5, 64)))
    assert STORE.pop(["a"])["a"]["position"] == []


def _defaults(n: int) -> tuple[Any, Any, Any]:
    import torch

    return torch.zeros(n, dtype=torch.long), torch.ones(n), torch.zeros(n)


@dataclass
class _Uva:
    np: np.ndarray


@dataclass
class _ReqStates:  # LogitsProcRequestState's fields the processor reads
    device: Any
    max_num_reqs: int
    prompt_len: _Uva
    prefill_len: _Uva


@dataclass
class _Ctx:  # LogitsContext's fields the processor reads
    idx_mapping_np: np.ndarray
    seq_lens_upper_bound_np: np.ndarray
    expanded_idx_mapping: Any


@needs_torch
def test_processor_v2_maps_rows_to_slots_and_skips_partial_prefill() -> None:
    import torch

    from ponder.engines.vllm_processor import PonderStatsProcessor
    from ponder.engines.vllm_stats import STORE, row_stats

    STORE.pop(["p", "q"])
    states = _ReqStates(
        torch.device("cpu"), 8, _Uva(np.array([0, 0, 0, 10, 0, 600, 0, 0])), _Uva(np.zeros(8))
    )
    states.prefill_len.np[:] = states.prompt_len.np
    proc = PonderStatsProcessor(_Config(), states)
    assert proc.runner == "v2"
    assert proc.add_request(3, _tracked("p", top_p=0.9)) is True
    assert proc.add_request(5, _tracked("q")) is True
    assert proc.add_request(1, _VP()) is False
    slots = np.array([5, 3, 1])
    z = torch.from_numpy(_logits(rows=3, v=64, seed=3))
    # q (slot 5) is mid-prefill: 256 of its 600 prompt tokens are in; p decodes position 2
    ctx = _Ctx(slots, np.array([256, 12, 4]), torch.from_numpy(slots))
    proc.apply(z.clone(), ctx)
    got = STORE.pop(["p", "q"])
    assert got["q"]["position"] == [] and got["p"]["position"] == [2.0]
    ref = row_stats(
        z,
        torch.ones(3),
        torch.zeros(3, dtype=torch.long),
        torch.tensor([1.0, 0.9, 1.0]),
        torch.zeros(3),
    ).numpy()
    np.testing.assert_allclose(got["p"]["log_z_processed"], [ref[1, 3]], rtol=1e-5)


def test_store_is_bounded() -> None:
    store = StatsStore(max_keys=3)
    for i in range(5):
        store.record([f"k{i}"], [0], np.zeros((1, 4), dtype=np.float32))
    assert len(store) == 3 and store.dropped == 2
    assert store.pop(["k0"])["k0"]["position"] == [] and store.pop(["k4"])["k4"]["position"] == [
        0.0
    ]


@needs_vllm
def test_vllms_own_loaders_accept_the_processor_on_both_runners() -> None:
    """The check that failed at start-up before ("must be a subclass of LogitsProcessor")."""
    fqcn = "ponder.engines.vllm_processor:PonderStatsProcessor"
    from vllm.v1.sample.logits_processor import _load_custom_logitsprocs

    assert [c.__name__ for c in _load_custom_logitsprocs([fqcn])] == ["PonderStatsProcessor"]
    try:
        from vllm.v1.worker.gpu.sample.logits_processor import loader
    except ImportError:  # vLLM 0.24 has no V2 runner
        return
    assert [c.__name__ for c in loader._load_v2_logitsprocs_by_fqcns([fqcn])] == [
        "PonderStatsProcessor"
    ]


def test_deepconf_confidence_from_vllms_own_top_k() -> None:
    """DeepConf on vLLM: `logprobs=k` asked even with exact stats, and each token's
    confidence is minus the mean of its k best raw logprobs (vLLM's extra entry for a sampled
    token outside the top k does not count)."""
    p = SamplingParams(confidence_top_k=5)
    assert sampling_kwargs(p, 1, stats_key="k")["logprobs"] == 5
    assert sampling_kwargs(SamplingParams(), 1, stats_key="k")["logprobs"] == 0
    one = SamplingParams(confidence_top_k=1)
    s, _ = to_sample(_out([5, 6], [-0.2, -0.1]), 0, one, 1000, None, piece)
    assert s.confidence == pytest.approx([0.2, 0.1])
    two = SamplingParams(confidence_top_k=2)
    s, _ = to_sample(_out([5, 6], [-0.2, -0.1]), 0, two, 1000, None, piece)
    assert s.confidence == pytest.approx([(0.2 + 9.0) / 2, (0.1 + 9.0) / 2])
    s, _ = to_sample(_out([5, 6], [-0.2, -0.1]), 0, SamplingParams(), 1000, None, piece)
    assert s.confidence.size == 0


def test_the_confidence_stop_rule_runs_client_side_on_vllm() -> None:
    """`stop_confidence` on vLLM goes through the chunked path (vLLM cannot apply it while
    decoding): every sample is cut at its first window below the bar."""
    eng = _engine(FakeAsyncLLM(finish="length"))  # one token per call, never finished
    eng.detokenize = lambda ids, special=False: "".join(piece(t) for t in ids)  # type: ignore[method-assign]
    params = SamplingParams(max_tokens=3, confidence_top_k=1, stop_confidence=(1, 100.0))
    gen = asyncio.run(eng.sample([1, 2], params, 2))
    assert [s.finish_reason for s in gen.samples] == ["confidence", "confidence"]
    assert [s.n_tokens for s in gen.samples] == [1, 1]
    assert gen.samples[0].confidence.tolist() == pytest.approx([0.5])


@dataclass
class SlowFakeAsyncLLM(FakeAsyncLLM):
    """Request i takes (i + 1) x 50 ms; an aborted one ends with vLLM's final "abort" output
    holding the tokens so far (what vLLM's V1 output processor sends)."""

    def __post_init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}

    async def generate(self, prompt: Any, sp: Any, request_id: str):
        i = int(request_id.rsplit("-", 1)[1])
        stop = self.events.setdefault(request_id, asyncio.Event())
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.05 * (i + 1))
            out = _out([10 + i], [-0.5], finish_reason="abort")
        except TimeoutError:
            out = _out([10 + i, 11 + i], [-0.5, -0.4])
        yield type("RO", (), {"outputs": [out], "finished": True, "prompt_logprobs": None})()

    async def abort(self, ids: Any) -> None:
        self.aborted += list(ids)
        for rid in ids:
            self.events.setdefault(rid, asyncio.Event()).set()


def test_on_sample_cuts_a_vllm_call_short() -> None:
    """Adaptive stopping on vLLM: when the rule fires on a finished sample, the requests still
    running are aborted and come back cut short ("cancelled", their tokens kept)."""
    fake = SlowFakeAsyncLLM()
    eng = _engine(fake)
    eng.exact_stats = False
    seen: list[int] = []

    def first(s: Sample) -> bool:
        seen.append(s.index)
        return True

    gen = asyncio.run(eng.sample([1, 2], SamplingParams(seed=1), 4, on_sample=first))
    assert seen == [0]
    assert [s.finish_reason for s in gen.samples] == ["stop", "cancelled", "cancelled", "cancelled"]
    assert [s.n_tokens for s in gen.samples] == [2, 1, 1, 1]
    assert len(fake.aborted) == len(set(fake.aborted)) == 3  # the three still running, once
