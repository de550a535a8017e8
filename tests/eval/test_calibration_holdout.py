"""Issue 30's acceptance: confidence that holds on problems nobody fitted, through the server.

`ponder eval --calibrate` fits the maps on one half of a shared data set (the problems whose id
hashes even, as it always splits); a real server started with `PONDER_CALIBRATION` then answers
every problem of the other half, one request per problem and row, and each row's calibrated
confidences are graded against the gold answers. Two data sets with different answer formats:
the few-shot arithmetic set (numbers, raw completions) and StrategyQA (yes/no, chat turns).

The bound per row is the noise floor's 95th percentile + 0.04 (`BOUND`, below, says why not
the median + 0.02). Print the figures, both temperatures of docs/evaluation.md:

    python -m tests.eval.test_calibration_holdout --temperature 0.7,1.0
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ponder.answers import as_answer, equivalent
from ponder.calibration import ece
from ponder.eval.datasets import Problem, _records, detect, load
from ponder.eval.draw import CandidateSource
from ponder.eval.records import hash_id
from ponder.eval.summary import noise_floor

from ..conftest import SHARED_DATA, start_server, stop_server

ROWS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "majority_vote@1": ("majority_vote", 1, {}),
    "majority_vote@8": ("majority_vote", 8, {}),
    "majority_vote@16": ("majority_vote", 16, {}),
    "majority_vote+beta@16": ("majority_vote", 16, {"adaptive": {"method": "beta"}}),
    "self_certainty@16": ("self_certainty", 16, {}),
    "deepconf+online@16": ("deepconf", 16, {"deepconf": {"mode": "online", "warmup": 4}}),
}
"""Row (the map's key @ N) -> the request that serves it: strategy, samples, ponder options.
The fixed, adaptive and online variants at N = 1, 8 and 16."""

EVAL = [
    "--strategies", "majority_vote,self_certainty,deepconf", "--samples", "1,8,16", "--pool", "32",
    "--adaptive", "beta", "--deepconf", "2048,4", "--seed", "0", "--calibrate",
]  # fmt: skip
"""The fit: every map ROWS serves (DeepConf online's warm-up of 4 under 16 samples)."""

SETS: dict[str, tuple[str, int | None, tuple[str, ...]]] = {
    "arith": ("arith/arith_fewshot.jsonl", None, tuple(ROWS)),
    "strategyqa": (
        "strategyqa/dev.json",
        8,
        ("majority_vote@1", "majority_vote+beta@16", "deepconf+online@16"),
    ),
}
"""Data set -> its file under ../shared/data, its tokens per sample (None: the set's own) and
the rows the test serves.
StrategyQA's chat turns cost about twice the arithmetic set's completions per request, so the
test serves it N = 1 and the adaptive and online variants (the fixed ones are served on the
arithmetic set; the script serves every row of both). Its prompt asks for yes or no first: 8
tokens hold the answer (the explanation is not graded)."""

BOUND = 0.04
"""Over the noise floor's 95th percentile, from the floor's own spread. One request per
held-out problem gives a row 100-115 decisions; on that many, a perfectly calibrated map's ECE
(20,000 simulated draws each, confidences uniform on [0.2, 0.95], beta(5, 2) and near 0.5)
exceeds the floor's median + 0.02 on 23% of rows, its 95th percentile + 0.02 on 1.1-1.7%, and
its 95th percentile + 0.04 on 0.2-0.5%. Nine rows checked against the median + 0.02 would fail
most runs of a perfect map, and this test meets a new draw of samples on each CPU kind (their
numerics differ), so the bound is the last. The offline table of docs/evaluation.md, with 800
decisions per row, meets the median + 0.02 on every row."""


@dataclass
class Row:
    row: str
    served: int
    accuracy: float
    ece_raw: float
    ece_calibrated: float
    floor: float
    floor_high: float

    @property
    def within(self) -> bool:
        return self.ece_calibrated <= self.floor_high + BOUND


def held_out(problems: list[Problem]) -> list[Problem]:
    """The half `ponder eval --calibrate` does not fit on (ids hashing odd)."""
    return [p for p in problems if hash_id(p.id) % 2 == 1]


def fitting_half(data: Path, out: Path) -> Path:
    """The data file's other half (ids hashing even), in its own format: `ponder eval
    --calibrate` on it fits on every problem and draws none of the held-out ones (they would
    only be sampled for its own held-out table, which is what the server measures here)."""
    records = _records(data)
    keep = [r for r, p in zip(records, load(data), strict=True) if hash_id(p.id) % 2 == 0]
    path = out / data.name
    if data.read_text().lstrip().startswith("["):
        path.write_text(json.dumps(keep))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return path


def fit(data: Path, max_tokens: int | None, temperature: float, out: Path) -> Path:
    """`ponder eval --calibrate` as a user runs it, on the fitting half; its calibration.json."""
    out.mkdir(parents=True, exist_ok=True)
    half = fitting_half(data, out)
    cmd = [sys.executable, "-m", "ponder.cli", "eval", "--data", str(half), *EVAL]
    cmd += [] if max_tokens is None else ["--max-tokens", str(max_tokens)]
    cmd += ["--reader", detect(data)]  # the copy's name and folder no longer say which
    cmd += ["--temperature", str(temperature), "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (out / "eval.log").write_text(run.stdout)  # its own table, for the record
    return out / "calibration.json"


async def serve(
    url: str,
    problems: list[Problem],
    rows: tuple[str, ...],
    temperature: float,
    max_tokens: int | None,
) -> dict[str, list[tuple[float, float, bool]]]:
    """Each row on every problem through the server: (raw, calibrated, correct) each. A row
    whose map was not used (its note says so) fails here: nothing was calibrated."""
    source = CandidateSource(url, temperature, 10**6, "smollm2")
    await source.start()
    gate = asyncio.Semaphore(4)  # a few at once: the engine batches them

    async def one(k: int, p: Problem, row: str) -> tuple[float, float, bool]:
        strategy, n, extra = ROWS[row]
        if max_tokens is not None:
            p = dataclasses.replace(p, max_tokens=max_tokens)
        async with gate:
            r = await source._ask_http(p, strategy, n, 10**6 + 100_003 * k, **extra)
        meta = r.ponder
        assert meta is not None and meta.notes is not None
        note = str(meta.notes.get("calibration"))
        assert note.startswith(f"{row}, temperature"), f"{row}: {note}"
        got = as_answer(r.answer, p.format) if r.answer is not None else None
        gold = as_answer(p.gold, p.format)
        ok = bool(got is not None and gold is not None and equivalent(got, gold))
        assert meta.confidence_raw is not None and meta.confidence is not None
        return meta.confidence_raw, meta.confidence, ok

    try:
        out = {}
        for row in rows:
            out[row] = list(await asyncio.gather(*(one(k, p, row) for k, p in enumerate(problems))))
        return out
    finally:
        await source.close()


def measure(
    data: Path,
    max_tokens: int | None,
    rows: tuple[str, ...],
    temperature: float,
    work: Path,
    cal: Path | None = None,
) -> tuple[list[Row], float]:
    """Fit on one half (or take that fit's `cal`), serve the other; the rows and the seconds
    the serving took."""
    cal = cal or fit(data, max_tokens, temperature, work / "fit")
    problems = held_out(load(data))
    env = {"PONDER_CALIBRATION": str(cal), "PONDER_MAX_SAMPLES": "16"}
    srv = start_server(work, env)
    try:
        started = time.perf_counter()
        got = asyncio.run(serve(srv.base_url, problems, rows, temperature, max_tokens))
        seconds = time.perf_counter() - started
    finally:
        stop_server(srv)
    out = []
    for row, decided in got.items():
        raw, calibrated, right = (np.array(x, dtype=np.float64) for x in zip(*decided, strict=True))
        floor, high = noise_floor([[c] for c in calibrated])
        e_raw, e_cal = ece(raw, right), ece(calibrated, right)
        out.append(Row(row, len(decided), float(right.mean()), e_raw, e_cal, floor, high))
    return out, seconds


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SETS))
def test_a_map_fitted_on_one_half_holds_on_the_other_through_the_server(
    name: str, tmp_path: Path
) -> None:
    rel, max_tokens, served = SETS[name]
    data = SHARED_DATA / rel
    if not data.exists():
        pytest.skip(f"{data} is absent (the shared workspace data is not beside this clone)")
    rows, _ = measure(data, max_tokens, served, 0.7, tmp_path)
    for r in rows:
        print(r)
    assert [r.row for r in rows] == list(served) and all(r.served >= 100 for r in rows)
    over = [r for r in rows if not r.within]
    assert not over, over
    # and the maps did something: the raw confidences are further off on the same decisions
    assert np.mean([r.ece_raw for r in rows]) > np.mean([r.ece_calibrated for r in rows]) + 0.03


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--temperature", default="0.7")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--rows", default=",".join(ROWS), help="rows served (default: all)")
    ap.add_argument("--out", type=Path, default=Path("calibration-holdout"))
    args = ap.parse_args()
    table = []
    for name in args.sets.split(","):
        rel, max_tokens, _ = SETS[name]
        served = tuple(r for r in args.rows.split(",") if r)
        for t in (float(x) for x in args.temperature.split(",")):
            work = args.out / f"{name}-t{t:g}"
            work.mkdir(parents=True, exist_ok=True)
            cal = work / "fit" / "calibration.json"
            rows, seconds = measure(
                SHARED_DATA / rel, max_tokens, served, t, work, cal if cal.exists() else None
            )
            print(f"{name} at {t:g}: served {len(rows)} rows in {seconds:.0f} s", flush=True)
            table += [{"set": name, "temperature": t, **vars(r), "within": r.within} for r in rows]
    print(
        "| set | T | row | served | accuracy | ECE raw | ECE calibrated | floor (95th) "
        "| ≤ floor + 0.02 | ≤ 95th + 0.04 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        median = "yes" if r["ece_calibrated"] <= r["floor"] + 0.02 else "no"
        ok = "yes" if r["within"] else "**no**"
        print(
            f"| {r['set']} | {r['temperature']:g} | {r['row']} | {r['served']} | "
            f"{r['accuracy']:.2f} | {r['ece_raw']:.3f} | {r['ece_calibrated']:.3f} | "
            f"{r['floor']:.3f} ({r['floor_high']:.3f}) | {median} | {ok} |"
        )
    (args.out / "rows.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
