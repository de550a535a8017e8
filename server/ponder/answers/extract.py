"""Answer extraction: one function per format of docs/strategies.md section 1 (pure, no I/O).

Numbers are read by Ponder into exact fractions (digit groups, scientific notation, fractions,
Unicode minus); LaTeX answers are kept as text and compared by math-verify in the worker
process (equivalence.py). Nothing here evaluates model text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from .jsonanswers import canonical, parse_json, tool_calls
from .patterns import AnswerPatternError, pattern_workers

Format = Literal[
    "auto",
    "boxed",
    "math",
    "number",
    "choice",
    "yesno",
    "text",
    "regex",
    "json",
    "tool_call",
    "none",
]
Kind = Literal["number", "math", "choice", "yesno", "text", "json"]


@dataclass(frozen=True)
class AnswerSpec:
    """How to read an answer out of a completion."""

    format: Format = "auto"
    pattern: str | None = None
    ignore_arguments: tuple[str, ...] = ()
    """With format `tool_call`: arguments that do not make a call another call."""
    vote: Literal["object", "field"] = "object"
    """With format `json`: vote on whole values, or on each field (strategies/fields.py)."""


@dataclass(frozen=True)
class Answer:
    """An extracted answer: display text, how to compare it, and its exact value when it is a
    plain number (integers compare exactly; see equivalence.py)."""

    text: str
    kind: Kind
    value: Fraction | None = None


# ---------------------------------------------------------------- text clean-up

_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2012": "-", "\ufe63": "-", "\uff0d": "-"})
_SPACES = re.compile(r"[\u00a0\u2009\u202f\u2007]")


def _clean(text: str) -> str:
    """Unicode minus signs to '-', no-break and thin spaces to ' '."""
    return _SPACES.sub(" ", text.translate(_MINUS))


# ---------------------------------------------------------------- numbers

_GROUP_SEP = r"(?:,|\{,\}|\\,|\\ | )"
_NUM = re.compile(
    r"(?<![\w.])(?P<sign>-\s?)?"
    r"(?:\\[dt]?frac\s*\{\s*(?P<fn>\d+)\s*\}\s*\{\s*(?P<fd>\d+)\s*\}"  # \frac{1}{2}
    r"|\\[dt]?frac(?P<sn>\d)(?P<sd>\d)(?!\d)"  # \frac12
    rf"|(?P<int>\d{{1,3}}(?:{_GROUP_SEP}\d{{3}})+(?!\d)|\d+)"  # 1,000 / 1 000 / 1{{,}}000 / 42
    r"(?:\.(?P<dec>\d+))?(?:[eE](?P<exp>[+-]?\d{1,3})(?![\w]))?"
    r"(?:\s*/\s*(?P<den>\d+)(?![\d.,]))?"  # 3/4
    r"|\.(?P<bare>\d+))"  # .5
)


def _number_value(m: re.Match[str]) -> Fraction | None:
    g = m.groupdict()
    if g["fn"] is not None or g["sn"] is not None:
        num, den = (g["fn"], g["fd"]) if g["fn"] is not None else (g["sn"], g["sd"])
        value = Fraction(int(num), int(den)) if int(den) else None
    elif g["bare"] is not None:
        value = Fraction(f"0.{g['bare']}")
    else:
        digits = re.sub(r"\D", "", g["int"])
        value = Fraction(f"{digits}.{g['dec']}" if g["dec"] else digits)
        if g["exp"] is not None:
            value *= Fraction(10) ** int(g["exp"])
        if g["den"] is not None:
            value = value / int(g["den"]) if int(g["den"]) else None
    if value is not None and g["sign"]:
        value = -value
    return value


def _numbers(text: str) -> list[Fraction]:
    """Every number in the text, in order."""
    out = []
    for m in _NUM.finditer(text):
        value = _number_value(m)
        if value is not None:
            out.append(value)
    return out


def _whole_number(text: str) -> Fraction | None:
    """The value when the text is just one number (a `$`, a trailing period and a unit in
    `\\text{}` or in words allowed around it), else None."""
    body = _strip_units(text.strip().strip("$").strip().rstrip(".").strip())
    m = _NUM.fullmatch(body)
    return _number_value(m) if m else None


_TEXT_UNIT = re.compile(r"^(.*?\d)\s*(?:\\[,;! ]\s*)*\\(?:text|mbox|mathrm)\{\s*[^{}\d]*\}\s*$")
_TEXT_WRAPPED = re.compile(r"^\\(?:text|mbox|mathrm)\{\s*([^{}]*?)\s*\}$")
_WORD_UNIT = re.compile(r"^(.*?\d)\s+(?:[a-zA-Z]{1,12}\.?)(?:\s+[a-zA-Z]{1,12})?$")
_DOLLARS = re.compile(r"^\\?\$\s*")


def _strip_units(body: str) -> str:
    """`5\\text{cm}`, `5 \\text{ cm}`, `5\\,\\text{cm}`, `\\text{5 cm}`, `5 cm`, `\\$5` -> `5`."""
    if m := _TEXT_WRAPPED.match(body):
        body = m.group(1)
    if m := _TEXT_UNIT.match(body):
        body = m.group(1)
    if m := _WORD_UNIT.match(body):
        body = m.group(1)
    body = _DOLLARS.sub("", body)
    return body.rstrip("\\%").rstrip("%").strip()


def format_number(value: Fraction) -> str:
    """Canonical display of a number, exact: integers in full, terminating decimals as decimals
    (1/2 -> "0.5"), other fractions as "p/q"."""
    if value.denominator == 1:
        return str(value.numerator)
    twos = fives = 0
    den = value.denominator
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    digits = str(abs(value.numerator * 10**places // value.denominator)).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def _number_answer(value: Fraction, kind: Kind = "number") -> Answer:
    return Answer(format_number(value), kind, value)


# ---------------------------------------------------------------- the "answer is" phrase

_ANSWER_IS = re.compile(
    r"(?:answer\s+is|answer\s*:|final\s+answer\s*(?:is)?\s*:?)\s*(?::|-(?=\s))?[ \t]*",
    re.IGNORECASE,
)
_HASHES = re.compile(r"####\s*")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_DISPLAY = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\$(.+?)\$|\\\((.+?)\\\)", re.DOTALL)


def _after_answer_is(text: str) -> str | None:
    """What follows the last "answer is" / "Answer:": a display or inline maths block (also on
    the following lines, `$$42$$`, `\\[42\\]`), a `\\boxed{}`, or the rest of the line up to
    the end of its sentence. None when there is no such phrase or nothing follows it."""
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    line = rest.split("\n", 1)[0].strip()
    if not line or line in ("$$", "\\[", "$", "\\("):
        block = _DISPLAY.search(rest.lstrip())
        if block and rest.lstrip().startswith(block.group(0)):
            inner = next(g for g in block.groups() if g is not None).strip()
            return inner or None
        nxt = rest.strip().split("\n", 1)[0].strip()
        return nxt or None
    if (inner := last_boxed(line)) is not None and line.lstrip().startswith(("\\boxed", "$")):
        return inner
    block = _DISPLAY.match(line)
    if block:
        return next(g for g in block.groups() if g is not None).strip() or None
    line = re.sub(r"\.\s.*$", "", line).strip().rstrip(".").strip()
    return line or None


def _last_equals(phrase: str) -> str:
    """ "40 + 2 = 42" -> "42": the side after the last "=" (not inside braces)."""
    depth, cut = 0, -1
    for i, ch in enumerate(phrase):
        depth += {"{": 1, "}": -1, "(": 1, ")": -1}.get(ch, 0)
        if ch == "=" and depth == 0 and phrase[i - 1 : i] not in ("<", ">", "!"):
            cut = i
    return phrase[cut + 1 :].strip() if cut >= 0 else phrase


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


# ---------------------------------------------------------------- maths


def _math_answer(raw: str) -> Answer | None:
    """A LaTeX/plain maths answer: a plain number when it is one (exact value), else text for
    math-verify. Two numbers side by side with only a space between them ("2 3") are not a
    product: they stay text, compared as written."""
    body = raw.strip().strip("$").strip()
    body = re.sub(r"^\\(?:displaystyle|textstyle)\s*", "", body)
    if body.startswith("\\boxed") and (inner := last_boxed(body)) is not None:
        body = inner
    body = _last_equals(body) if re.match(r"^[A-Za-z]\s*=", body) else body
    body = body.rstrip(".").strip()
    if not body:
        return None
    if (value := _whole_number(body)) is not None:
        return _number_answer(value, "math")
    if re.search(r"\d\s+\d", _strip_units(body)) and not re.search(r"[\\{}^_]", body):
        return Answer(body, "text")
    return Answer(body, "math")


def extract_number(text: str) -> Answer | None:
    text = _clean(text)
    phrase = _after_answer_is(text)
    if phrase is not None and (nums := _numbers(_last_equals(phrase))):
        return _number_answer(nums[0])
    hashes = list(_HASHES.finditer(text))
    if hashes and (nums := _numbers(text[hashes[-1].end() :])):
        return _number_answer(nums[0])
    nums = _numbers(text)
    return _number_answer(nums[-1]) if nums else None


def extract_boxed(text: str) -> Answer | None:
    text = _clean(text)
    inner = last_boxed(text)
    if inner is not None:
        return _math_answer(inner)
    phrase = _after_answer_is(text)
    if phrase is not None and (ans := _math_answer(_last_equals(phrase))) is not None:
        return ans
    nums = _numbers(text)
    return _number_answer(nums[-1], "math") if nums else None


# ---------------------------------------------------------------- choices, yes/no, text

_LETTER = r"\(?\s*([A-Ea-e])\s*\)?"
_CLAUSE_END = (
    r"(?=\s*(?:$|[.,;:!)\]\n]))"  # the letter ends its clause: "answer is a number" is prose
)
_CHOICE_COMMITTED = [
    # "answer is (C)", "Answer: C", "Answer D", "ANS:D", "answer = B", "Answer: Option C",
    # "Correct answer A", "The correct option is (b)."
    re.compile(
        r"(?:answer|\bans|\boption|\bchoice)\s*(?:is\b|[:=.\-])?\s*(?:option\s*)?"
        rf"{_LETTER}{_CLAUSE_END}",
        re.I | re.M,
    ),
    re.compile(r"\b([A-E])\)?\s+is\s+(?:the\s+)?(?:correct|right)?\s*(?:answer|choice|option)\b"),
    re.compile(r"(?:^|[\s(\[])\(([A-Ea-e])\)(?![\w'])"),  # "(C)" as an option mention
    re.compile(r"(?:^|\n)\s*([A-Ea-e])\)\s"),  # "C) 42" at the start of a line
    re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([A-Ea-e])\)?\s*\}?\s*\}"),
    re.compile(
        rf"\b(?:pick|choose|select|go with)\s+(?:option\s+|choice\s+)?{_LETTER}(?![\w'])", re.I
    ),
    re.compile(rf"\b(?:so|therefore|thus|hence)[,:]?\s+{_LETTER}[.!]?\s*$", re.I),
]
_CHOICE_LAST_LINE = re.compile(r"\(?([A-Ea-e])[).]?")


def extract_choice(text: str) -> Answer | None:
    """A committed option letter only: "answer is (C)", "Answer: C", "(C)", "C) ..." at a line
    start, \\boxed{C}, "I pick/choose C", a closing "so C", or a final line that is just the
    letter. A letter in prose ("A triangle...", "A = bh/2") is no answer."""
    text = _clean(text)
    for pat in _CHOICE_COMMITTED:
        found = pat.findall(text)
        if found:
            return Answer(found[-1].upper(), "choice")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if lines and (m := _CHOICE_LAST_LINE.fullmatch(lines[-1].rstrip("."))):
        return Answer(m.group(1).upper(), "choice")
    return None


_YESNO = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)


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


# ---------------------------------------------------------------- caller patterns


# ---------------------------------------------------------------- auto and dispatch

_MATHY = re.compile(
    r"[\\^_{}=<>]|\d\s*[-+*/]\s*[\d(a-zA-Z]|[a-zA-Z]\s*[-+*/^]|\binfty\b|∞|√|π"
    r"|^[(\[].*,.*[)\]]$"  # a tuple or an interval
)


def extract_auto(text: str) -> Answer | None:
    text = _clean(text)
    if _BOXED.search(text):
        return extract_boxed(text)
    phrase = _after_answer_is(text)
    if phrase is not None:
        tail = _last_equals(phrase)
        if (value := _whole_number(tail)) is not None:
            return _number_answer(value)
        if _MATHY.search(tail):
            return _math_answer(tail)
        if re.fullmatch(r"-?\d+(?:\s+-?\d+)+", tail.rstrip(". ")):  # "2 3": not one number
            return extract_text(tail)
        if nums := _numbers(tail):
            return _number_answer(nums[0])
        return extract_text(phrase)
    nums = _numbers(text)
    if nums:
        return _number_answer(nums[-1])
    return extract_text(text)


def _gold_number(text: str) -> Answer | None:
    nums = _numbers(text.replace("$", ""))
    return _number_answer(nums[0]) if nums else None


def _gold_math(text: str) -> Answer | None:
    inner = last_boxed(text)
    return _math_answer(inner if inner is not None else text)


def _gold_choice(text: str) -> Answer | None:
    letter = text.strip("() .")
    return Answer(letter.upper(), "choice") if re.fullmatch(r"[A-Ea-e]", letter) else None


def extract_json(text: str) -> Answer | None:
    """The completion's JSON value, canonical (jsonanswers.py)."""
    value = parse_json(text)
    return None if value is None else Answer(canonical(value), "json")


def extract_tool_call(text: str, ignore: tuple[str, ...] = ()) -> Answer | None:
    """The calls of a tool-call reply, name and arguments (minus `ignore`), canonical."""
    calls = tool_calls(text, ignore)
    return None if calls is None else Answer(calls, "json")


@dataclass(frozen=True)
class FormatRule:
    """One answer format: how a completion's answer is read, and how a reference answer (a
    data set's gold, already just the answer) is. How two answers compare follows from the
    `Answer.kind` they produce (equivalence.py)."""

    extract: Callable[[str], Answer | None] | None
    """None: the caller's pattern decides (format "regex", patterns.py)."""
    gold: Callable[[str], Answer | None]
    configured: Callable[[AnswerSpec], Callable[[str], Answer | None]] | None = None
    """The extractor for a request's spec, when the format reads options of it."""


FORMAT_RULES: dict[str, FormatRule] = {
    "auto": FormatRule(extract_auto, _gold_math),
    "boxed": FormatRule(extract_boxed, _gold_math),
    "math": FormatRule(extract_boxed, _gold_math),
    "number": FormatRule(extract_number, _gold_number),
    "choice": FormatRule(extract_choice, _gold_choice),
    "yesno": FormatRule(extract_yesno, extract_yesno),
    "text": FormatRule(extract_text, extract_text),
    "regex": FormatRule(None, extract_text),
    "json": FormatRule(extract_json, extract_json),
    "tool_call": FormatRule(
        extract_tool_call,
        extract_tool_call,
        lambda spec: lambda text: extract_tool_call(text, spec.ignore_arguments),
    ),
    "none": FormatRule(lambda text: None, lambda gold: None),
}
"""Every answer format (docs/strategies.md, "Answer formats"): the one table. `Format`, the
request schema's values and FORMATS are checked against it (tests/unit/test_answers.py)."""


def as_answer(gold: str, fmt: str) -> Answer | None:
    """A reference answer (already just the answer, e.g. a data set's gold) as an Answer of the
    format, for comparing with extracted ones."""
    return FORMAT_RULES[fmt].gold(_clean(str(gold).strip()))


def extract(text: str, spec: AnswerSpec) -> Answer | None:
    """The answer of one completion under `spec`, or None when it has none (casts no vote)."""
    return extract_many([text], spec)[0]


def extract_many(texts: Sequence[str], spec: AnswerSpec) -> list[Answer | None]:
    """Each completion's answer under `spec`. A caller's pattern (format "regex") is matched
    by a pattern worker process, all the texts in one call (patterns.py)."""
    rule = FORMAT_RULES.get(spec.format)
    if rule is None:
        raise ValueError(f"unknown answer format {spec.format!r}")
    if rule.extract is None:
        if not spec.pattern:
            raise AnswerPatternError("answer.format 'regex' needs answer.pattern")
        found = pattern_workers().extract(spec.pattern, list(texts))
        return [Answer(got, "text") if got else None for got in found]
    extract = rule.configured(spec) if rule.configured else rule.extract
    return [extract(text) for text in texts]


FORMATS: tuple[str, ...] = tuple(FORMAT_RULES)
