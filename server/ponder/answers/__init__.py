"""Answer extraction and equivalence (docs/strategies.md section 1): parser and grader apart."""

from .equivalence import equivalent, normalize_text, numbers_equal
from .extract import (
    FORMATS,
    Answer,
    AnswerPatternError,
    AnswerSpec,
    as_answer,
    compile_pattern,
    extract,
    format_number,
    last_boxed,
)
from .symbolic import SymbolicUnavailable, SymbolicWorker, default_worker

__all__ = [
    "FORMATS",
    "Answer",
    "AnswerPatternError",
    "AnswerSpec",
    "SymbolicUnavailable",
    "SymbolicWorker",
    "as_answer",
    "compile_pattern",
    "default_worker",
    "equivalent",
    "extract",
    "format_number",
    "last_boxed",
    "normalize_text",
    "numbers_equal",
]
