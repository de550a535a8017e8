"""When two extracted answers are the same answer (strategies.md section 1, pure except for
the symbolic worker, which owns its own timeout)."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable

from .extract import Answer
from .symbolic import default_worker

REL_TOL = 1e-6

SymbolicEqual = Callable[[str, str], bool]


def normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace, trim punctuation at both ends."""
    s = re.sub(r"\s+", " ", text.lower()).strip()
    return s.strip(string.punctuation + " ")


def numbers_equal(a: float, b: float) -> bool:
    """Relative tolerance 1e-6 (5 == 5.0, 5 != 500); exact for zero."""
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)


def equivalent(a: Answer, b: Answer, symbolic: SymbolicEqual | None = None) -> bool:
    """True when a and b are the same answer.

    Numbers compare numerically; choice and yes/no letters/words exactly; text by its
    normalized string; math first numerically, then by string, then symbolically in the
    worker process (a timeout there means "not equal").
    """
    if a.value is not None and b.value is not None:
        return numbers_equal(a.value, b.value)
    if a.kind in ("choice", "yesno") or b.kind in ("choice", "yesno"):
        return a.kind == b.kind and a.text.lower() == b.text.lower()
    if normalize_text(a.text) == normalize_text(b.text):
        return True
    if "math" in (a.kind, b.kind) and "text" not in (a.kind, b.kind):
        check = symbolic or default_worker().equal
        return check(a.text, b.text)
    return False
