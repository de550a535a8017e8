"""Extraction and equivalence (docs/strategies.md section 1), including the named traps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ponder.answers import (
    Answer,
    AnswerPatternError,
    AnswerSpec,
    SymbolicWorker,
    equivalent,
    extract,
    last_boxed,
)


def ans(text: str, fmt: str = "auto", pattern: str | None = None) -> Answer | None:
    return extract(text, AnswerSpec(fmt, pattern))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So the answer is 42.", "42"),
        ("The answer is: 1,234 apples", "1234"),
        ("She pays $3.50 then 7 more, total 10.50.", "10.5"),
        ("Work...\n#### 18", "18"),
        ("The answer is 5 and not 7", "5"),
        ("temperature went to -4 today", "-4"),
        ("3-5 items, 7", "7"),
        ("half is 1/2", "0.5"),
        ("no digits here", None),
    ],
)
def test_number(text: str, expected: str | None) -> None:
    got = ans(text, "number")
    assert (got.text if got else None) == expected


def test_number_trailing_period_and_commas() -> None:
    got = ans("It costs 10,000.", "number")
    assert got is not None and got.value == 10000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{\frac{1}{2}}$", "0.5"),
        (r"\boxed{3} then \boxed{x^{2}+1}", "x^{2}+1"),
        (r"\fbox{7}", "7"),
        (r"nested \boxed{\sqrt{\frac{a}{b}}} end", r"\sqrt{\frac{a}{b}}"),
        ("the answer is 12", "12"),
        ("we get 3 and 4", "4"),
    ],
)
def test_boxed(text: str, expected: str) -> None:
    got = ans(text, "boxed")
    assert got is not None and got.text == expected


def test_boxed_unclosed_and_empty_are_ignored() -> None:
    assert last_boxed(r"\boxed{12") is None
    assert last_boxed(r"\boxed{ }") is None
    assert last_boxed(r"\boxed{4} and \boxed{}") == "4"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (C).", "C"),
        ("I pick B", "B"),
        ("Options (A) and (D); I choose (D)", "D"),
        ("A train leaves... so E", "E"),
        ("nothing here", None),
    ],
)
def test_choice(text: str, expected: str | None) -> None:
    got = ans(text, "choice")
    assert (got.text if got else None) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Yes, because... so no.", "no"), ("That is True", "yes"), ("maybe", None)],
)
def test_yesno(text: str, expected: str | None) -> None:
    got = ans(text, "yesno")
    assert (got.text if got else None) == expected


def test_text_and_regex() -> None:
    assert ans("  Paris.  ", "text") == Answer("Paris", "text")
    assert ans("   ", "text") is None
    got = ans("City: Rome. City: Paris.", "regex", r"City: (\w+)")
    assert got is not None and got.text == "Paris"
    assert ans("nothing", "regex", r"City: (\w+)") is None
    with pytest.raises(AnswerPatternError):
        ans("x", "regex", "(unclosed")


def test_regex_catastrophic_pattern_times_out_instead_of_hanging() -> None:
    assert ans("a" * 40 + "!", "regex", r"(a+)+$") is None


def test_auto_prefers_boxed_then_answer_is_then_number_then_text() -> None:
    assert ans(r"5 then \boxed{6}").text == "6"  # type: ignore[union-attr]
    got = ans("The answer is 42 apples. Also 7.")
    assert got is not None and got.kind == "number" and got.text == "42"
    got = ans(r"The answer is $\frac{3}{4}$.")
    assert got is not None and got.value == 0.75
    assert ans("We have 3 cats and 4 dogs").text == "4"  # type: ignore[union-attr]
    assert ans("Blue.") == Answer("Blue", "text")
    assert ans("The answer is Paris.") == Answer("Paris", "text")


def test_equivalence_numbers_and_traps() -> None:
    five, five_f, five_hundred = ans("5", "number"), ans("5.0", "number"), ans("500", "number")
    assert five and five_f and five_hundred
    assert equivalent(five, five_f)
    assert not equivalent(five, five_hundred)  # the include_percentage trap


def test_equivalence_kinds() -> None:
    assert equivalent(Answer("C", "choice"), Answer("c", "choice"))
    assert not equivalent(Answer("C", "choice"), Answer("C", "text"))
    assert equivalent(Answer("New  York", "text"), Answer("new york!", "text"))
    assert not equivalent(Answer("yes", "yesno"), Answer("no", "yesno"))


def test_math_equivalence_uses_symbolic_checker() -> None:
    calls = []

    def fake(a: str, b: str) -> bool:
        calls.append((a, b))
        return True

    a, b = Answer(r"\sqrt{2}/2", "math"), Answer(r"\frac{\sqrt{2}}{2}", "math")
    assert equivalent(a, b, symbolic=fake)
    assert calls == [(a.text, b.text)]
    assert not equivalent(Answer("x", "math"), Answer("x y", "text"), symbolic=fake)


@pytest.fixture(scope="module")
def worker() -> SymbolicWorker:
    w = SymbolicWorker(timeout_s=2.0)
    w.start()
    yield w
    w.close()


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
        (r"x^2+2x+1", r"(x+1)^2", True),
        (r"(1, 2)", r"\left(1,2\right)", True),
        (r"2\pi", r"\pi \cdot 2", True),
        (r"x=5", r"5", True),
        (r"\frac{1}{3}", "0.3333", False),
        (r"x+1", "x-1", False),
        ("(1, 2)", "(2, 1)", False),
        ("__import__('os')", "0", False),
    ],
)
def test_symbolic_worker(worker: SymbolicWorker, a: str, b: str, same: bool) -> None:
    assert worker.equal(a, b) is same


def test_symbolic_worker_hard_timeout_is_not_cached_then_recovers() -> None:
    w = SymbolicWorker(timeout_s=2.0)
    w.start()
    assert w.equal("2", "2") is True  # warm
    w.timeout_s = 1e-4  # shorter than any real comparison: the hard limit fires
    assert w.equal("x^2+2x+1", "(x+1)^2") is False
    assert w.timeouts == 1
    w.timeout_s = 2.0
    # not cached as "not equal": a fresh worker answers the same question right
    assert w.equal("x^2+2x+1", "(x+1)^2") is True
    assert w.restarts == 1
    w.close()


def test_symbolic_worker_needs_no_main_guard(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A script without `if __name__ == "__main__":` gets real answers (the worker is a
    plain subprocess, not a multiprocessing spawn that re-imports the script)."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from ponder.answers import SymbolicWorker\n"
        "w = SymbolicWorker()\n"
        "print(w.equal('x^2+2x+1', '(x+1)^2'), w.equal('[2,5)', '(2,5]'))\n"
        "w.close()\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "False"], out.stderr


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_number_roundtrip_property(n: int) -> None:
    got = ans(f"Some work. The answer is {n:,}.", "number")
    assert got is not None and got.value == n


@given(st.integers(min_value=1, max_value=10**6), st.integers(min_value=1, max_value=9))
def test_appended_digits_never_equal_property(n: int, k: int) -> None:
    a, b = ans(str(n), "number"), ans(str(n) + "0" * k, "number")
    assert a is not None and b is not None
    assert not equivalent(a, b)


def test_one_table_names_every_answer_format() -> None:
    """Issue 24 item 4: the format names are written once (answers.extract.FORMAT_RULES); the
    `Format` type, FORMATS and the request schema's values are that table's keys."""
    import typing

    from ponder.answers import FORMAT_RULES, FORMATS
    from ponder.answers.extract import Format
    from ponder.api.schemas import AnswerOptions

    assert set(typing.get_args(Format)) == set(FORMAT_RULES) == set(FORMATS)
    schema = AnswerOptions.model_json_schema()["properties"]["format"]
    assert set(schema["enum"]) == set(FORMAT_RULES)
