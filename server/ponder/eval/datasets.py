"""Readers for the evaluation data formats (pure; files in, Problems out)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One evaluation item: what to send, the reference answer, how to read answers."""

    id: str
    prompt: str
    gold: str
    format: str
    kind: str = "chat"  # "chat": prompt is one user message; "completion": a raw prompt
    stop: tuple[str, ...] = ()
    max_tokens: int = 256


@dataclass
class ReplayProblem:
    """Stored samples of one problem (no generation needed)."""

    id: str
    gold: str
    format: str
    texts: list[str]
    mean_logprob: list[float] | None = None
    self_certainty: list[float] | None = None
    tokens: list[float] = field(default_factory=list)
    confidence: list[list[float]] | None = None
    """DeepConf's per-token confidences of each sample."""


NUMBER_HINT = "Solve it step by step, then end with 'The answer is N'."


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text().lstrip()
    if text.startswith("["):
        data = json.loads(text)
        return list(data)
    return _jsonl(path)


def read_gsm8k(path: Path) -> list[Problem]:
    return [
        Problem(
            f"gsm8k-{i}",
            f"{r['question']}\n{NUMBER_HINT}",
            r["answer"].split("####")[-1].strip().replace(",", ""),
            "number",
        )
        for i, r in enumerate(_records(path))
    ]


def read_svamp(path: Path) -> list[Problem]:
    return [
        Problem(
            str(r.get("ID", i)),
            f"{r['Body'].strip()} {r['Question'].strip()}\n{NUMBER_HINT}",
            str(r["Answer"]),
            "number",
        )
        for i, r in enumerate(_records(path))
    ]


def read_aqua(path: Path) -> list[Problem]:
    out = []
    for i, r in enumerate(_records(path)):
        options = "\n".join(r["options"])
        prompt = (
            f"{r['question']}\nOptions:\n{options}\n"
            "Think it through, then end with 'The answer is X' where X is the letter."
        )
        out.append(Problem(f"aqua-{i}", prompt, r["correct"], "choice"))
    return out


def read_strategyqa(path: Path) -> list[Problem]:
    return [
        Problem(
            str(r.get("qid", i)),
            f"{r['question']}\nAnswer yes or no, then explain briefly.",
            "yes" if r["answer"] else "no",
            "yesno",
        )
        for i, r in enumerate(_records(path))
    ]


def read_math500(path: Path) -> list[Problem]:
    return [
        Problem(
            str(r.get("unique_id", i)),
            f"{r['problem']}\nPlease reason step by step, and put your final answer within "
            "\\boxed{}.",
            str(r["answer"]),
            "boxed",
            max_tokens=512,
        )
        for i, r in enumerate(_records(path))
    ]


def read_arith(path: Path) -> list[Problem]:
    return [
        Problem(
            str(r["id"]),
            r["prompt"],
            str(r["answer"]),
            "number",
            kind="completion",
            stop=("\n",),
            max_tokens=8,
        )
        for r in _records(path)
    ]


def read_generic(path: Path) -> list[Problem]:
    """JSONL with `question`, `answer`, optional `format` (default auto), `id`, `max_tokens`."""
    return [
        Problem(
            str(r.get("id", i)),
            r["question"],
            str(r["answer"]),
            r.get("format", "auto"),
            max_tokens=int(r.get("max_tokens", 256)),
        )
        for i, r in enumerate(_records(path))
    ]


def read_replay(path: Path) -> list[ReplayProblem]:
    """Stored samples: JSONL of {question?, answer|gt, texts|response|code: [...],
    mean_logprob?: [...], self_certainty?: [...], format?}. Reads the shared
    qwen25math_math_cot_100 file as is (MATH, boxed answers), and a `ponder eval` run's own
    problems.jsonl (its plain samples, with everything stored for them)."""
    out = []
    for i, r in enumerate(_records(path)):
        if isinstance(r.get("candidates"), dict) and "sampling" in r["candidates"]:
            out.append(_own_record(r))
            continue
        texts = r.get("texts") or r.get("response") or r.get("code")
        if not isinstance(texts, list):
            raise ValueError(f"{path}: record {i} has no list of sample texts")
        gold = r.get("answer", r.get("gt"))
        out.append(
            ReplayProblem(
                str(r.get("idx", r.get("id", i))),
                str(gold),
                r.get("format", "boxed"),
                [str(t) for t in texts],
                r.get("mean_logprob"),
                r.get("self_certainty"),
                [int(t) for t in r.get("tokens", [])] or [len(str(t).split()) for t in texts],
            )
        )
    return out


def _own_record(r: dict[str, Any]) -> ReplayProblem:
    """A problems.jsonl record of `ponder eval`: its pool of plain samples."""
    cands = r["candidates"]["sampling"]

    def field_of(name: str) -> list[Any] | None:
        values = [c.get(name) for c in cands]
        return None if any(v is None for v in values) else values

    return ReplayProblem(
        str(r["id"]),
        str(r["gold"]),
        r.get("format", "auto"),
        [str(c["text"]) for c in cands],
        field_of("mean_logprob"),
        field_of("self_certainty"),
        [float(c["tokens"]) for c in cands],
        field_of("confidence"),
    )


READERS = {
    "gsm8k": read_gsm8k,
    "svamp": read_svamp,
    "aqua": read_aqua,
    "strategyqa": read_strategyqa,
    "math500": read_math500,
    "arith": read_arith,
    "jsonl": read_generic,
}


def detect(path: Path) -> str:
    """The reader for a file, from its name and first record."""
    name = path.name.lower()
    for key in ("gsm8k", "svamp", "aqua", "strategyqa", "math500", "arith"):
        if key in name or key in str(path.parent).lower():
            return key
    first = _records(path)[0]
    if {"Body", "Question", "Answer"} <= set(first):
        return "svamp"
    if {"options", "correct"} <= set(first):
        return "aqua"
    if {"problem", "answer"} <= set(first):
        return "math500"
    if {"prompt", "answer"} <= set(first):
        return "arith"
    if "question" in first and isinstance(first.get("answer"), bool):
        return "strategyqa"
    if isinstance(first.get("answer"), str) and "####" in first["answer"]:
        return "gsm8k"
    return "jsonl"


def load(path: Path, reader: str | None = None) -> list[Problem]:
    return READERS[reader or detect(path)](path)
