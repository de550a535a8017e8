"""Answer extraction and equivalence (docs/strategies.md section 1): parser and grader apart."""

from .equivalence import equivalent, normalize_text, numbers_equal
from .extract import (
    FORMAT_RULES,
    FORMATS,
    Answer,
    AnswerPatternError,
    AnswerSpec,
    as_answer,
    extract,
    extract_many,
    format_number,
    last_boxed,
)
from .patterns import PatternWorkers, check_pattern, pattern_workers
from .symbolic import SymbolicUnavailable, SymbolicWorker, default_worker

__all__ = [
    "FORMATS",
    "FORMAT_RULES",
    "Answer",
    "AnswerPatternError",
    "AnswerSpec",
    "PatternWorkers",
    "SymbolicUnavailable",
    "SymbolicWorker",
    "as_answer",
    "check_pattern",
    "default_worker",
    "equivalent",
    "extract",
    "extract_many",
    "format_number",
    "last_boxed",
    "normalize_text",
    "numbers_equal",
    "pattern_workers",
]
