"""Answer extraction: one function per format of strategies.md section 1 (pure, no I/O)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import regex

from .mathexpr import looks_like_math, normalize_latex

Format = Literal["auto", "boxed", "math", "number", "choice", "yesno", "text", "regex"]
FORMATS: tuple[str, ...] = ("auto", "boxed", "math", "number", "choice", "yesno", "text", "regex")
Kind = Literal["number", "math", "choice", "yesno", "text"]

REGEX_TIMEOUT_S = 0.1
"""A caller's pattern gets this long per sample; a pattern that runs longer extracts nothing."""


class AnswerPatternError(ValueError):
    """A caller-supplied regex does not compile."""


@dataclass(frozen=True)
class AnswerSpec:
    """How to read an answer out of a completion."""

    format: Format = "auto"
    pattern: str | None = None


@dataclass(frozen=True)
class Answer:
    """An extracted answer: display text, how to compare it, and its number when it is one."""

    text: str
    kind: Kind
    value: float | None = None


_NUM = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+(?![\d,.]))?|(?<![\w.])\.\d+")
_ANSWER_IS = re.compile(r"answer\s+is\s*(?::|-(?=\s))?\s*", re.IGNORECASE)
_HASHES = re.compile(r"####\s*")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_YESNO = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(r"-?\s*\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")
_FRAC = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(\d+)\}")


def format_number(value: float) -> str:
    """Canonical display of a number: 5.0 -> "5", 0.5 -> "0.5"."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".10g")


def _numbers(text: str) -> list[tuple[float, int]]:
    """Every number in the text with its start offset; commas in digit groups are dropped."""
    out = []
    for m in _NUM.finditer(text):
        raw = m.group(0).replace(",", "")
        if "/" in raw:
            num, den = raw.split("/")
            if float(den) == 0:
                continue
            value = float(num) / float(den)
        else:
            value = float(raw)
        start = m.start()
        if start > 0 and text[start - 1] == "-" and (start < 2 or not text[start - 2].isalnum()):
            value, start = -value, start - 1
        out.append((value, start))
    return out


def _number_answer(value: float) -> Answer:
    return Answer(format_number(value), "number", value)


def _after_answer_is(text: str) -> str | None:
    """The phrase after the last "answer is", up to the end of its line, or None."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    phrase = text[matches[-1].end() :].split("\n", 1)[0].strip()
    phrase = re.sub(r"\.\s.*$", "", phrase).strip().rstrip(".").strip()
    return phrase or None


def last_boxed(text: str) -> str | None:
    """Brace-matched content of the last \\boxed{...} or \\fbox{...}; None if absent/unclosed."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            inner = text[start : i - 1].strip()
            if inner:
                return inner
    return None


def _math_answer(raw: str) -> Answer | None:
    text = normalize_latex(raw)
    if not text:
        return None
    value = None
    if _PLAIN_NUMBER.fullmatch(text):
        value = float(text.replace(",", "").replace(" ", ""))
    elif m := _FRAC.fullmatch(text):
        sign = -1.0 if m.group(1) else 1.0
        if float(m.group(3)) != 0:
            value = sign * float(m.group(2)) / float(m.group(3))
    if value is not None:
        return Answer(format_number(value), "math", value)
    return Answer(text, "math")


def extract_number(text: str) -> Answer | None:
    phrase = _after_answer_is(text)
    if phrase is not None and (nums := _numbers(phrase)):
        return _number_answer(nums[0][0])
    hashes = list(_HASHES.finditer(text))
    if hashes and (nums := _numbers(text[hashes[-1].end() :])):
        return _number_answer(nums[0][0])
    nums = _numbers(text)
    return _number_answer(nums[-1][0]) if nums else None


def extract_boxed(text: str) -> Answer | None:
    inner = last_boxed(text)
    if inner is not None:
        return _math_answer(inner)
    phrase = _after_answer_is(text)
    if phrase is not None and (ans := _math_answer(phrase)) is not None:
        return ans
    nums = _numbers(text)
    return Answer(format_number(nums[-1][0]), "math", nums[-1][0]) if nums else None


_CHOICE_ANSWER_IS = re.compile(r"answer\s+is\s*[:\-]?\s*\(?([A-E])\b\)?")
_CHOICE_PAREN = re.compile(r"\(([A-E])\)")
_CHOICE_BARE = re.compile(r"\b([A-E])\b(?!\s+[a-z])(?!')")


def extract_choice(text: str) -> Answer | None:
    for pat in (_CHOICE_ANSWER_IS, _CHOICE_PAREN, _CHOICE_BARE):
        found = pat.findall(text)
        if found:
            return Answer(found[-1].upper(), "choice")
    return None


def extract_yesno(text: str) -> Answer | None:
    found = _YESNO.findall(text)
    if not found:
        return None
    word = found[-1].lower()
    return Answer({"true": "yes", "false": "no"}.get(word, word), "yesno")


def extract_text(text: str) -> Answer | None:
    body = text.strip()
    body = body[:-1].rstrip() if body.endswith(".") else body
    return Answer(body, "text") if body else None


def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """Compile a caller's pattern or raise AnswerPatternError with regex's own message."""
    try:
        return regex.compile(pattern)
    except (regex.error, TypeError, ValueError, OverflowError) as exc:
        raise AnswerPatternError(f"answer.pattern does not compile: {exc}") from None


def extract_regex(text: str, pattern: str) -> Answer | None:
    """First capture group (else whole match) of the LAST match; bounded by REGEX_TIMEOUT_S."""
    compiled = compile_pattern(pattern)
    try:
        matches = list(compiled.finditer(text, timeout=REGEX_TIMEOUT_S))
    except TimeoutError:
        return None
    if not matches:
        return None
    last = matches[-1]
    got = last.group(1) if compiled.groups else last.group(0)
    got = (got or "").strip()
    return Answer(got, "text") if got else None


def extract_auto(text: str) -> Answer | None:
    if _BOXED.search(text):
        return extract_boxed(text)
    phrase = _after_answer_is(text)
    if phrase is not None:
        stripped = phrase.strip("$ ")
        if _PLAIN_NUMBER.fullmatch(stripped):
            return _number_answer(float(stripped.replace(",", "").replace(" ", "")))
        if looks_like_math(stripped):
            return _math_answer(stripped)
        if nums := _numbers(phrase):
            return _number_answer(nums[0][0])
        return extract_text(phrase)
    nums = _numbers(text)
    if nums:
        return _number_answer(nums[-1][0])
    return extract_text(text)


def as_answer(gold: str, fmt: str) -> Answer | None:
    """A reference answer (already just the answer, e.g. a data set's gold) as an Answer of the
    format, for comparing with extracted ones."""
    text = str(gold).strip()
    if fmt in ("number",):
        nums = _numbers(text.replace("$", ""))
        return _number_answer(nums[0][0]) if nums else None
    if fmt in ("boxed", "math", "auto"):
        inner = last_boxed(text)
        return _math_answer(inner if inner is not None else text)
    if fmt == "choice":
        return extract_choice(f"({text.strip('()').upper()})")
    if fmt == "yesno":
        return extract_yesno(text)
    return extract_text(text)


def extract(text: str, spec: AnswerSpec) -> Answer | None:
    """The answer of one completion under `spec`, or None when it has none (casts no vote)."""
    fmt = spec.format
    if fmt == "auto":
        return extract_auto(text)
    if fmt in ("boxed", "math"):
        return extract_boxed(text)
    if fmt == "number":
        return extract_number(text)
    if fmt == "choice":
        return extract_choice(text)
    if fmt == "yesno":
        return extract_yesno(text)
    if fmt == "text":
        return extract_text(text)
    if fmt == "regex":
        if not spec.pattern:
            raise AnswerPatternError("answer.format 'regex' needs answer.pattern")
        return extract_regex(text, spec.pattern)
    raise ValueError(f"unknown answer format {fmt!r}")
