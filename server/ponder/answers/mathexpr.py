"""A small, safe parser from LaTeX / plain math answers to sympy expressions.

Recursive descent over a token list: numbers, + - * / ^, parentheses, \\frac, \\sqrt, \\pi,
\\infty, single-letter symbols, implicit multiplication and comma tuples. It never calls
`eval` (sympy's `parse_expr` does, so it is not used). Building the expression can still be
arbitrarily slow (10^10^10), so callers run it in the symbolic worker with a hard timeout.
"""

from __future__ import annotations

import re
from typing import Any

_STRIP = [
    r"\\left",
    r"\\right",
    r"\\displaystyle",
    r"\\!",
    r"\\,",
    r"\\;",
    r"\\:",
    r"\\ ",
    r"\$",
    r"\\%",
    r"%",
    r"\^\s*\{?\\circ\}?",
]
_STRIP_RE = re.compile("|".join(_STRIP))
_FRAC_ALIAS = re.compile(r"\\[dt]frac")
_TIMES = re.compile(r"\\(?:cdot|times)")
_TEXT = re.compile(r"\\(?:text|mbox|textbf|mathrm)\{([^{}]*)\}")


def _text_macro(m: re.Match[str]) -> str:
    """`\\text{Evelyn}` is the answer itself; `5\\text{ cm}` after a number is a unit."""
    content = m.group(1)
    before = m.string[: m.start()].rstrip()
    if before and (before[-1].isdigit() or before[-1] == "}") and content[:1].isspace():
        return ""
    return content


_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LHS = re.compile(r"\s*[A-Za-z]\s*=\s*(.+)")
_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+|\\[A-Za-z]+|[A-Za-z]|[-+*/^(){}\[\],=])")
_GREEK = {
    "alpha",
    "beta",
    "gamma",
    "delta",
    "theta",
    "lambda",
    "mu",
    "sigma",
    "phi",
    "omega",
}


class MathParseError(ValueError):
    """The text is not an expression this parser understands."""


def normalize_latex(text: str) -> str:
    """Drop presentation-only LaTeX and a leading `x =`; map operator macros to ASCII."""
    s = _STRIP_RE.sub("", text.strip())
    s = _FRAC_ALIAS.sub(r"\\frac", s)
    s = _TIMES.sub("*", s)
    s = s.replace("\\div", "/")
    s = _TEXT.sub(_text_macro, s)
    s = _DIGIT_COMMA.sub("", s)
    m = _LHS.fullmatch(s)
    if m:
        s = m.group(1)
    return s.strip().rstrip(".").strip()


def tokenize(text: str) -> list[str]:
    s = normalize_latex(text)
    pos, out = 0, []
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            if s[pos:].strip() == "":
                break
            raise MathParseError(f"unexpected character {s[pos]!r}")
        out.append(m.group(1))
        pos = m.end()
    if not out:
        raise MathParseError("empty expression")
    return out


class _Parser:
    def __init__(self, tokens: list[str], sympy: Any) -> None:
        self.t = tokens
        self.i = 0
        self.sp = sympy

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise MathParseError(f"expected {expected or 'a token'}, got {tok}")
        self.i += 1
        return tok

    def top(self) -> Any:
        items = [self.expr()]
        while self.peek() == ",":
            self.take(",")
            items.append(self.expr())
        if self.peek() is not None:
            raise MathParseError(f"unexpected {self.peek()}")
        return items[0] if len(items) == 1 else self.sp.Tuple(*items)

    def expr(self) -> Any:
        left = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.term()
            left = left + right if op == "+" else left - right
        return left

    def term(self) -> Any:
        left = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "/"):
                self.take()
                right = self.unary()
                left = left * right if tok == "*" else left / right
            elif tok is not None and tok not in ("+", "-", ")", "]", "}", ",", "=", "^"):
                left = left * self.power()  # implicit multiplication: 2x, 2\pi, 3(4)
            else:
                return left

    def unary(self) -> Any:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> Any:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            return base ** self.unary()
        return base

    def group(self) -> Any:
        self.take("{")
        inner = self.expr()
        self.take("}")
        return inner

    def atom(self) -> Any:
        sp = self.sp
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            return sp.Rational(tok)
        if tok in ("(", "["):
            close = ")" if tok == "(" else "]"
            items = [self.expr()]
            while self.peek() == ",":
                self.take(",")
                items.append(self.expr())
            self.take(close)
            return items[0] if len(items) == 1 else sp.Tuple(*items)
        if tok == "{":
            inner = self.expr()
            self.take("}")
            return inner
        if tok == "\\frac":
            num = self.group() if self.peek() == "{" else self.atom()
            den = self.group() if self.peek() == "{" else self.atom()
            return num / den
        if tok == "\\sqrt":
            if self.peek() == "[":
                self.take("[")
                k = self.expr()
                self.take("]")
                return sp.root(self.group() if self.peek() == "{" else self.atom(), k)
            return sp.sqrt(self.group() if self.peek() == "{" else self.atom())
        if tok == "\\pi":
            return sp.pi
        if tok == "\\infty":
            return sp.oo
        if tok.startswith("\\") and tok[1:] in _GREEK:
            return sp.Symbol(tok[1:])
        if len(tok) == 1 and tok.isalpha():
            return sp.Symbol(tok)
        raise MathParseError(f"unsupported token {tok}")


def parse_math(text: str) -> Any:
    """The sympy expression of `text`; raises MathParseError when it is not one."""
    import sympy

    return _Parser(tokenize(text), sympy).top()


def looks_like_math(text: str) -> bool:
    """Cheap syntactic check (no sympy): only math tokens, and no word of 2+ plain letters."""
    try:
        tokens = tokenize(text)
    except MathParseError:
        return False
    letters = "".join(t if len(t) == 1 and t.isalpha() else " " for t in tokens)
    return not re.search(r"[A-Za-z]{2,}", letters) and any(
        t[0].isdigit() or t.startswith("\\") for t in tokens
    )
