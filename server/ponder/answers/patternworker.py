"""`python -m ponder.answers.patternworker MEMORY_MB`: callers' regular expressions compiled and
matched in a process of their own, never in the server.

The `regex` module expands counted repeats when it compiles, so a short pattern can ask for
gigabytes (`(?:a{65535}){65535}`), and only the module itself knows what its syntax means
(`[[]` is a whole class in V0, comments and verbose mode hide brackets). So the compiled size
is not estimated here: this process limits its own address space to MEMORY_MB (an rlimit set
before anything is compiled), a pattern that needs more fails with MemoryError (or kills this
process), and the caller (patterns.py) also holds a hard timeout over every call.

Protocol: one JSON object per line on stdin, `{"p": pattern, "t": [text, ...], "s": seconds}`,
one JSON line back: `{"a": [answer or null, ...]}` (the first capture group, else the whole
match, of the last match in each text; `s` seconds per text), or `{"e": message}` when the
pattern does not compile. `{"g": schema}` asks whether llguidance can build the grammar of a
JSON schema (structured outputs): `{"a": []}` or `{"e": message}`. A `ready` line comes first.
"""

from __future__ import annotations

import collections
import gc
import json
import resource
import sys
import time
from typing import Any

CACHE_SIZE = 32
"""Compiled patterns kept (they live and die with this process and count against its limit)."""


def last_match(compiled: Any, text: str, seconds: float) -> str | None:
    """First capture group (else the whole match) of the last match, stripped; None when
    there is none or the scan takes longer than `seconds` (one deadline for the whole scan:
    `regex`'s own timeout applies to each search on its own)."""
    deadline = time.monotonic() + seconds
    last, pos = None, 0
    try:
        while pos <= len(text):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            m = compiled.search(text, pos, timeout=remaining)
            if m is None:
                break
            last, pos = m, (m.end() if m.end() > m.start() else m.end() + 1)
    except (TimeoutError, MemoryError):
        return None
    if last is None:
        return None
    got = (last.group(1) if compiled.groups else last.group(0)) or ""
    return got.strip() or None


def _schema_verdict(schema: str, lark: bool = False) -> dict[str, Any]:
    """Whether llguidance builds a grammar from the schema (or Lark grammar), within its own
    parser limits."""
    try:
        from llguidance import LLMatcher

        grammar = (
            LLMatcher.grammar_from_lark(schema)
            if lark
            else LLMatcher.grammar_from_json_schema(schema)
        )
        error = LLMatcher.validate_grammar(grammar)
    except MemoryError:
        gc.collect()
        return {"e": "the schema is too large to compile"}
    except Exception as exc:  # llguidance raises ValueError for a schema that is not JSON
        return {"e": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return {"e": str(error)[:300]} if error else {"a": []}


def main() -> int:
    limit = int(sys.argv[1]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import regex

    cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        reply: dict[str, Any]
        try:
            ask = json.loads(line)
            if "g" in ask:
                reply = _schema_verdict(str(ask["g"]), bool(ask.get("l")))
                out.write(json.dumps(reply) + "\n")
                out.flush()
                continue
            pattern, texts, seconds = str(ask["p"]), list(ask.get("t") or []), float(ask["s"])
            compiled = cache.get(pattern)
            if compiled is None:
                compiled = regex.compile(pattern, cache_pattern=False)
                cache[pattern] = compiled
                if len(cache) > CACHE_SIZE:
                    cache.popitem(last=False)
            cache.move_to_end(pattern)
            reply = {"a": [last_match(compiled, str(t), seconds) for t in texts]}
        except MemoryError:
            cache.clear()
            gc.collect()
            reply = {"e": "answer.pattern is too large to compile"}
        except (regex.error, TypeError, ValueError, OverflowError, RecursionError) as exc:
            reply = {"e": f"answer.pattern does not compile: {exc}"}
        except Exception as exc:  # a question this process cannot read: say so, keep serving
            reply = {"e": f"answer.pattern could not be used: {type(exc).__name__}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
