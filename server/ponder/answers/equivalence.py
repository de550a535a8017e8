"""When two extracted answers are the same answer (docs/strategies.md section 1).

Pure except for the maths comparison, which math-verify does in the worker process (with its
own hard timeout, symbolic.py).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from fractions import Fraction

from .extract import Answer
from .symbolic import default_worker

FLOAT_ROUNDING = 6
"""Decimal places non-integers are rounded to before comparing (math-verify's default)."""

SymbolicEqual = Callable[[str, str], bool]


def normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace, trim punctuation at both ends."""
    s = re.sub(r"\s+", " ", text.lower()).strip()
    return s.strip(string.punctuation + " ")


def numbers_equal(a: Fraction, b: Fraction) -> bool:
    """Integers exactly (5 = 5.0 = 5.00; 1000000 != 1000001; 5 != 500); other numbers after
    rounding both to FLOAT_ROUNDING places, as math-verify does (1/3 = 0.333333)."""
    if a == b:
        return True
    if a.denominator == 1 and b.denominator == 1:
        return False
    return round(a, FLOAT_ROUNDING) == round(b, FLOAT_ROUNDING)


def equivalent(a: Answer, b: Answer, symbolic: SymbolicEqual | None = None) -> bool:
    """True when a and b are the same answer.

    Plain numbers compare exactly (numbers_equal); choice letters and yes/no words exactly;
    text by its normalized string; maths by its normalized string, then by math-verify in the
    worker process (intervals, tuples, sets and infinities as such; a timeout means "not
    equal").
    """
    if "json" in (a.kind, b.kind):  # canonical texts (jsonanswers.py)
        return a.kind == b.kind and a.text == b.text
    if a.value is not None and b.value is not None:
        return numbers_equal(a.value, b.value)
    if a.kind in ("choice", "yesno") or b.kind in ("choice", "yesno"):
        return a.kind == b.kind and a.text.lower() == b.text.lower()
    if "math" in (a.kind, b.kind) and "text" not in (a.kind, b.kind):
        # brackets, signs and backslashes are maths here: only white space may differ
        if re.sub(r"\s+", "", a.text) == re.sub(r"\s+", "", b.text):
            return True
        check = symbolic or default_worker().equal
        return check(a.text, b.text)
    return normalize_text(a.text) == normalize_text(b.text)
