"""`python -m ponder.answers.mathworker`: math-verify in a process of its own.

Reads one JSON pair `["a", "b"]` per line on stdin, writes `1` (equivalent) or `0` per line on
stdout, after a first `ready` line. It runs as a plain module, so it needs no `__main__` guard
in the program that starts it, and math-verify's own `signal.alarm` timeouts run in this
process's main thread, never in a server thread; the caller keeps a hard timeout around each
answer and kills the process when it is exceeded (symbolic.py).

Only math-verify's LaTeX parser (latex2sympy2, an ANTLR grammar) is used: its plain-expression
path goes through sympy's `parse_expr`, which calls `eval`, and model text is never evaluated.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

PARSE_TIMEOUT_S = 1
VERIFY_TIMEOUT_S = 1


def _latex(text: str) -> str:
    return text if "$" in text or text.startswith("\\[") else f"${text}$"


def equal(a: str, b: str, parse: Any, verify: Any, config: Any) -> bool:
    """math-verify's verdict on two answers (LaTeX or plain), both directions being one call
    (math-verify's `verify` compares gold and target symmetrically for these forms)."""
    pa = parse(_latex(a), extraction_config=config, parsing_timeout=PARSE_TIMEOUT_S)
    pb = parse(_latex(b), extraction_config=config, parsing_timeout=PARSE_TIMEOUT_S)
    if not pa or not pb:
        return False
    return bool(verify(pa, pb, timeout_seconds=VERIFY_TIMEOUT_S))


def main() -> int:
    logging.disable(logging.WARNING)  # math-verify logs each timeout and parse failure
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            a, b = json.loads(line)
            ok = equal(str(a), str(b), parse, verify, config)
        except Exception:
            ok = False
        out.write("1\n" if ok else "0\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
