"""Answer extraction and equivalence (strategies.md section 1): parser and grader kept apart."""

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
from .symbolic import SymbolicWorker, default_worker

__all__ = [
    "FORMATS",
    "Answer",
    "AnswerPatternError",
    "AnswerSpec",
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
