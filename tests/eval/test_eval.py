"""`ponder eval`: readers on the shared data, metrics by hand, subset evaluation, end to end."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ponder.answers import AnswerSpec, as_answer
from ponder.eval.datasets import detect, load, read_replay
from ponder.eval.metrics import bootstrap_ci, brier, ece, reliability
from ponder.eval.records import Candidate, ProblemRecord, to_samples
from ponder.eval.runner import adaptive_trial, evaluate, judge, subsets, variant_trial
from ponder.strategies import REGISTRY, DeepConfOptions, SelectOptions
from ponder.types import Sample

from ..conftest import ROOT, SHARED_DATA, Server

DATA = {
    "gsm8k/test_first1000.jsonl": ("gsm8k", 1000, "number"),
    "svamp/SVAMP.json": ("svamp", 1000, "number"),
    "aqua/test.json": ("aqua", 254, "choice"),
    "strategyqa/dev.json": ("strategyqa", 229, "yesno"),
    "math500/test_first400.jsonl": ("math500", 400, "boxed"),
    "arith/arith_fewshot.jsonl": ("arith", 200, "number"),
}


@pytest.mark.parametrize("rel", sorted(DATA))
def test_readers_on_the_shared_data(rel: str, tmp_path: Path) -> None:
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared workspace data is not beside this clone)")
    reader, count, fmt = DATA[rel]
    assert detect(path) == reader
    # a copy under a name that says nothing is known by its records
    copy = tmp_path / f"data{path.suffix}"
    copy.write_bytes(path.read_bytes())
    assert detect(copy) == reader
    problems = load(path)
    assert len(problems) == count and all(p.format == fmt for p in problems)
    assert len({p.id for p in problems}) == count
    parsed = [as_answer(p.gold, fmt) for p in problems]
    assert sum(a is not None for a in parsed) >= 0.99 * count
    if reader == "gsm8k":
        assert problems[0].gold == "18"
    if reader == "aqua":
        assert "Options:" in problems[0].prompt and problems[0].gold in "ABCDE"


def test_replay_reader_on_the_shared_samples() -> None:
    path = SHARED_DATA / "sampled/qwen25math_math_cot_100/math_cot_100_minus_heldout.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared workspace data is not beside this clone)")
    problems = read_replay(path)
    assert len(problems) == 99 and all(len(p.texts) == 8 for p in problems)
    assert problems[0].gold == "420" and problems[0].format == "boxed"


def test_ece_brier_bootstrap_by_hand() -> None:
    conf, correct = [0.9, 0.9, 0.1, 0.1], [1, 0, 0, 0]
    # bin 9: accuracy 0.5 vs confidence 0.9 (weight 1/2); bin 1: 0 vs 0.1 (weight 1/2)
    assert ece(conf, correct) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert brier(conf, correct) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert ece([1.0, 1.0], [1, 1]) == 0.0  # confidence 1.0 lands in the last bin
    assert reliability(conf, correct) == [(0.1, 0.0, 2), (0.9, 0.5, 2)]
    mean, lo, hi = bootstrap_ci([1.0, 1.0, 1.0])
    assert (mean, lo, hi) == (1.0, 1.0, 1.0)
    mean, lo, hi = bootstrap_ci([0.0, 1.0] * 50, seed=3)
    assert mean == 0.5 and lo < 0.5 < hi and hi - lo < 0.3
    assert bootstrap_ci([0.0, 1.0] * 50, seed=3) == (mean, lo, hi)


def _samples(texts: list[str], rng: np.random.Generator) -> list[Sample]:
    out = []
    for i, t in enumerate(texts):
        n = int(rng.integers(3, 9))
        lp = rng.normal(-0.8, 0.5, n).astype(np.float32).clip(max=0)
        kl = rng.normal(6.0, 2.0, n).astype(np.float32).clip(min=0)
        out.append(Sample(i, t, list(range(n)), "stop", lp, kl, lp, np.zeros(n, np.float32)))
    return out


@pytest.mark.parametrize("strategy", ["majority_vote", "self_certainty", "rpc"])
def test_subset_evaluation_equals_calling_the_strategy(strategy: str) -> None:
    rng = np.random.default_rng(1)
    texts = [f"so the answer is {rng.choice([3, 4, 5])}" for _ in range(12)]
    full = _samples(texts, rng)
    cands = [Candidate(s.text, s.n_tokens, s.mean_logprob, s.self_certainty) for s in full]
    opts = SelectOptions(answer=AnswerSpec("number"))
    direct = REGISTRY[strategy].decide(full, opts)
    via = REGISTRY[strategy].decide(to_samples(cands), opts)
    assert (via.answer, via.chosen) == (direct.answer, direct.chosen)
    assert via.confidence == pytest.approx(direct.confidence, rel=1e-5)
    gold = as_answer("4", "number")
    trial = judge(strategy, cands, opts, gold)
    assert trial.correct == (direct.answer == "4")
    assert trial.tokens == sum(s.n_tokens for s in full)
    record = ProblemRecord("p", "4", "number", {"sampling": cands})
    per = evaluate(record, [strategy], [1, 4, 12], count=5, seed=0)[strategy]
    assert [len(per[n]) for n in (1, 4, 12)] == [5, 5, 1]
    assert per[12][0] == trial
    assert record.results[strategy][12]["accuracy"] == float(trial.correct)
    # the chosen answer is recorded beside its grade (problems.jsonl), for auditing the grader
    assert trial.answer == direct.answer and record.results[strategy][12]["answers"] == [
        direct.answer
    ]
    assert len(record.results[strategy][4]["answers"]) == 5 and record.gold_parsed == "4"


def test_subsets_are_distinct_sorted_and_seeded() -> None:
    a = subsets(8, 3, 5, np.random.default_rng(0))
    b = subsets(8, 3, 5, np.random.default_rng(0))
    assert a == b and all(len(set(s)) == 3 and s == sorted(s) for s in a)
    assert subsets(8, 8, 5, np.random.default_rng(0)) == [list(range(8))]


def test_tiny_end_to_end_eval_on_the_real_model(tmp_path: Path) -> None:
    data = tmp_path / "arith.jsonl"
    rows = [
        ("a1", "2 + 3 = 5\n4 + 1 = 5\n6 + 2 =", "8"),
        ("a2", "3 * 4 = 12\n2 * 5 =", "10"),
        ("a3", "12 + 5 = 17\n31 + 4 =", "35"),
    ]
    data.write_text(
        "".join(json.dumps({"id": i, "prompt": p, "answer": a}) + "\n" for i, p, a in rows)
    )
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ponder.cli",
            "eval",
            "--data",
            str(data),
            "--samples",
            "1,2,4",
            "--strategies",
            "majority_vote,self_certainty,rpc,cntp,deepconf",
            "--deepconf",
            "2,2",
            "--subsets",
            "3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for name in (
        "problems.jsonl",
        "summary.csv",
        "accuracy_vs_n.png",
        "accuracy_vs_tokens.png",
        "reliability.png",
        "report.html",
    ):
        assert (out / name).stat().st_size > 0, name
    records = [json.loads(x) for x in (out / "problems.jsonl").read_text().splitlines()]
    assert len(records) == 3 and len(records[0]["candidates"]["sampling"]) == 4
    assert len(records[0]["candidates"]["cntp"]) == 4
    for c in records[0]["candidates"]["sampling"]:  # DeepConf's per-token confidence, stored
        assert len(c["confidence"]) == c["tokens"] and min(c["confidence"]) > 0
    for rec in records:
        assert rec["gold_parsed"] is not None
        for per_n in rec["results"].values():
            for res in per_n.values():
                assert len(res["answers"]) >= 1
                assert all(a is None or isinstance(a, str) for a in res["answers"])
    summary = list(csv.DictReader((out / "summary.csv").open()))
    got = {(r["strategy"], int(r["n"])) for r in summary}
    fixed = ("majority_vote", "self_certainty", "rpc", "cntp", "deepconf")
    assert got == {(s, n) for s in fixed for n in (1, 2, 4)} | {("deepconf+online", 4)}
    for r in summary:
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and float(r["mean_tokens"]) > 0
        assert float(r["ci_low"]) <= float(r["accuracy"]) <= float(r["ci_high"])
        assert int(r["problems"]) == 3


def test_eval_against_a_running_server(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "two.jsonl"
    data.write_text(
        json.dumps({"id": "x1", "prompt": "2 + 3 = 5\n6 + 2 =", "answer": "8"})
        + "\n"
        + json.dumps({"id": "x2", "prompt": "3 * 4 = 12\n2 * 5 =", "answer": "10"})
        + "\n"
    )
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ponder.cli",
            "eval",
            "--data",
            str(data),
            "--samples",
            "1,2",
            "--strategies",
            "majority_vote,rpc,cntp,deepconf",
            "--url",
            server.base_url,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert {(r["strategy"], int(r["n"])) for r in summary} == {
        (s, n) for s in ("majority_vote", "rpc", "cntp", "deepconf") for n in (1, 2)
    }
    records = [json.loads(x) for x in (out / "problems.jsonl").read_text().splitlines()]
    assert all(len(r["candidates"]["sampling"]) == 2 for r in records)
    assert all(c["mean_logprob"] is not None for r in records for c in r["candidates"]["sampling"])
    # over HTTP the per-token confidences come from the candidates (`token_confidence`)
    assert all(
        len(c["confidence"]) == c["tokens"] for r in records for c in r["candidates"]["sampling"]
    )


def test_calibrate_on_replayed_samples_writes_a_map_that_lowers_ece(tmp_path: Path) -> None:
    path = SHARED_DATA / "sampled/qwen25math_math_cot_100/math_cot_100_minus_heldout.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared workspace data is not beside this clone)")
    out = tmp_path / "out"
    args = ["--samples", "1,4,8", "--strategies", "majority_vote", "--calibrate", "--out", str(out)]
    args += ["--adaptive", "beta,window"]
    run = subprocess.run(
        [sys.executable, "-m", "ponder.cli", "eval", "--replay", str(path), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    from ponder.calibration import Calibration

    cal = Calibration.load(out / "calibration.json")
    got = {(m.strategy, m.samples) for m in cal.maps}
    assert {("majority_vote", 1), ("majority_vote", 4), ("majority_vote+beta", 8)} <= got
    summary = [r for r in csv.DictReader((out / "summary.csv").open()) if r["n"] == "8"]
    by = {r["strategy"]: r for r in summary}
    fixed, early = by["majority_vote"], by["majority_vote+beta"]
    assert float(early["mean_samples"]) < 8 == float(fixed["mean_samples"])
    assert float(early["mean_tokens"]) < 0.8 * float(fixed["mean_tokens"])
    assert "ECE calibrated" in run.stdout
    assert (out / "calibration.png").stat().st_size > 0  # reliability before / after
    assert "src='calibration.png'" in (out / "report.html").read_text()
    m1 = cal.at("majority_vote", 1)
    assert m1 is not None and m1.fitted_on > 100 and 0.0 <= m1(0.5) <= 1.0


def test_adaptive_rows_replay_the_rule_in_stored_order() -> None:
    opts = SelectOptions(answer=AnswerSpec("number"))
    gold = as_answer("7", "number")
    same = [Candidate("It is 7.", 5, -0.5, 1.0) for _ in range(8)]
    t = adaptive_trial("majority_vote", "beta", same, opts, gold)
    assert t.samples == 4 and t.correct and t.tokens == 20  # one wave of 4 settles it
    split = [Candidate(f"It is {v}.", 5, -0.5, 1.0) for v in (7, 8, 7, 8, 7, 8, 7, 8)]
    t = adaptive_trial("majority_vote", "beta", split, opts, gold)
    assert t.samples == 8 and t.tokens == 40  # never settles: the whole pool
    t = adaptive_trial("majority_vote", "window", same[:1] + split[1:], opts, gold)
    assert t.samples == 8


def test_a_pool_larger_than_the_top_budget_gives_it_subsets_too() -> None:
    """`ponder eval --pool`: with more samples than the largest budget, that budget and its
    adaptive and online rows get `count` subset decisions each (one without a larger pool)."""
    rng = np.random.default_rng(2)
    conf = lambda: [float(x) for x in rng.uniform(1, 5, 4)]  # noqa: E731
    pool = [
        Candidate(f"the answer is {rng.choice([4, 5])}", 4, -0.2, 1.0, conf()) for _ in range(12)
    ]
    online = DeepConfOptions(mode="online", warmup=2, window=2, keep=0.9)
    own = {"deepconf": online.model_copy(update={"mode": "offline"})}
    names = ["majority_vote", "deepconf"]
    record = ProblemRecord("p", "4", "number", {"sampling": pool})
    wide = evaluate(record, names, [1, 4], count=5, seed=0, adaptive=["beta"], own=own)
    assert {r: len(wide[r][4]) for r in wide} == {
        "majority_vote": 5, "majority_vote+beta": 5,
        "deepconf": 5, "deepconf+beta": 5, "deepconf+online": 5,
    }  # fmt: skip
    assert len({t.confidence for t in wide["majority_vote"][4]}) > 1  # different subsets
    record = ProblemRecord("p", "4", "number", {"sampling": pool[:4]})
    exact = evaluate(record, names, [1, 4], count=5, seed=0, adaptive=["beta"], own=own)
    assert {r: len(exact[r][4]) for r in exact} == dict.fromkeys(wide, 1)


def test_deepconf_online_rows_count_tokens_up_to_the_cut() -> None:
    online = DeepConfOptions(mode="online", warmup=2, window=2, keep=1.0)
    opts = SelectOptions(
        answer=AnswerSpec("number"), own=online.model_copy(update={"mode": "offline"})
    )
    (variant,) = REGISTRY["deepconf"].variants(opts, 4)  # the strategy names its online row
    assert variant.name == "online" and REGISTRY["deepconf"].variants(opts, 2) == ()
    gold = as_answer("4", "number")
    pool = [
        Candidate("the answer is 4", 4, -0.1, 1.0, [3.0, 3.0, 3.0, 3.0]),
        Candidate("the answer is 4", 4, -0.1, 1.0, [4.0, 4.0, 4.0, 4.0]),
        Candidate("the answer is 5", 6, -0.1, 1.0, [3.0, 1.0, 1.0, 3.0, 3.0, 3.0]),
        Candidate("the answer is 4", 4, -0.1, 1.0, [5.0, 5.0, 5.0, 5.0]),
    ]
    t = variant_trial("deepconf", variant, pool, gold)
    assert t.correct and t.samples == 4
    # bar = the lower warm-up trace's confidence, 3: the third trace's first window (3, 1)
    # falls below it, so it stopped after its second token
    assert t.tokens == 4 + 4 + 2 + 4


def test_a_strategy_whose_stats_samples_do_not_carry_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 item 3: stored candidates carry mean logprob, self-certainty and DeepConf's
    confidence; a selection strategy whose scores read another per-token stat would have been
    evaluated on zeros without a word. `ponder eval` now refuses it, naming the stat."""
    import argparse

    from ponder.eval import cli as eval_cli
    from ponder.eval.runner import unsupplied_stats
    from ponder.strategies import REGISTRY, Selection
    from ponder.strategies.majority_vote import select

    odd = Selection("entropy_vote", select, stats=frozenset({"entropy_processed", "logprob"}))
    monkeypatch.setitem(REGISTRY, "entropy_vote", odd)
    monkeypatch.setattr(eval_cli, "ALL", (*eval_cli.ALL, "entropy_vote"))
    assert unsupplied_stats("entropy_vote") == ["entropy_processed"]
    assert all(not unsupplied_stats(s) for s in eval_cli.ALL if s != "entropy_vote")
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n')
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    args = parser.parse_args(
        ["--data", str(data), "--strategies", "entropy_vote", "--out", str(tmp_path)]
    )
    assert eval_cli.run_eval(args) == 2


def test_live_strategies_run_per_budget_and_the_compute_matched_table(tmp_path: Path) -> None:
    """Issue 27 item 5: usc, aggregate and verify ask the model again after sampling, so
    `ponder eval` runs each once per budget (in process here) instead of replaying stored
    samples; their tokens count the follow-up calls; `--budget` prints each strategy's best
    row within that many generated tokens per problem."""
    data = tmp_path / "two.jsonl"
    data.write_text(
        json.dumps({"id": "y1", "prompt": "2 + 3 = 5\n6 + 2 =", "answer": "8"})
        + "\n"
        + json.dumps({"id": "y2", "prompt": "3 * 4 = 12\n2 * 5 =", "answer": "10"})
        + "\n"
    )
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "ponder.cli", "eval", "--data", str(data), "--samples", "1,2",
         "--strategies", "majority_vote,usc,aggregate,verify", "--budget", "1000000",
         "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    summary = {
        (r["strategy"], int(r["n"])): r for r in csv.DictReader((out / "summary.csv").open())
    }
    names = ("majority_vote", "usc", "aggregate", "verify")
    assert set(summary) == {(s, n) for s in names for n in (1, 2)}
    plain = float(summary[("majority_vote", 2)]["mean_tokens"])
    for s in ("usc", "aggregate", "verify"):  # the same seeded candidates, plus follow-up calls
        assert float(summary[(s, 2)]["mean_tokens"]) > plain
        assert int(summary[(s, 2)]["subsets"]) == 1
    assert "compute-matched" in run.stdout
    records = [json.loads(x) for x in (out / "problems.jsonl").read_text().splitlines()]
    assert all(set(r["results"]) == set(names) for r in records)


def test_calibrate_on_several_files_and_temperatures_at_once(tmp_path: Path) -> None:
    """Issue 30: `--data A,B --temperature T1,T2 --calibrate` evaluates the files as one set
    (ids prefixed with the file's name) once per temperature, each in OUT/t<T>/, and writes
    one calibration.json holding every temperature's maps, each saying its temperature."""
    a, b = tmp_path / "sums.jsonl", tmp_path / "products.jsonl"
    a.write_text(
        "".join(
            json.dumps(
                {"id": f"s{i}", "question": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1)}
            )
            + "\n"
            for i in range(1, 5)
        )
    )
    b.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "question": f"What is {i} times 2?", "answer": str(2 * i)})
            + "\n"
            for i in range(1, 5)
        )
    )
    out = tmp_path / "out"
    args = ["--data", f"{a},{b}", "--temperature", "0.7,1.0", "--samples", "1,2"]
    args += ["--strategies", "majority_vote", "--calibrate", "--out", str(out)]
    args += ["--pool", "3", "--max-tokens", "24"]  # 3 samples each, of at most 24 tokens
    run = subprocess.run(
        [sys.executable, "-m", "ponder.cli", "eval", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for t in ("t0.7", "t1"):
        records = [json.loads(x) for x in (out / t / "problems.jsonl").read_text().splitlines()]
        drawn = [c for r in records for c in r["candidates"]["sampling"]]
        assert len(drawn) == 3 * len(records) and max(c["tokens"] for c in drawn) <= 24
        ids = [r["id"] for r in records]
        assert sorted(ids) == sorted(
            [f"sums:s{i}" for i in range(1, 5)] + [f"products:p{i}" for i in range(1, 5)]
        )
        assert (out / t / "report.html").exists()
    from ponder.calibration import Calibration

    cal = Calibration.load(out / "calibration.json")
    assert {m.temperature for m in cal.maps} == {0.7, 1.0}
    assert {(m.strategy, m.samples) for m in cal.maps} == {
        ("majority_vote", 1),
        ("majority_vote", 2),
    }
    m, said = cal.lookup("majority_vote", 2, 1.0)
    assert m is not None and m.temperature == 1.0 and said == "majority_vote@2, temperature 1"


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--samples", "1,8", "--pool", "4"], "--pool must be at least the largest budget (8)"),
        (["--max-tokens", "0"], "--max-tokens must be positive"),
        (["--samples", "0,2"], "--samples needs positive budgets"),
    ],
)
def test_bad_eval_options_are_refused_before_any_sampling(
    given: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from ponder.eval.cli import add_arguments, run_eval

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", "nowhere.jsonl", *given])
    assert run_eval(args) == 2
    assert said in " ".join(capsys.readouterr().out.split())
