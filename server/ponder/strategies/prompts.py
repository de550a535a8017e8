"""The prompts of the strategies that show the model its own candidates (usc, aggregate,
verify): one place, documented in docs/strategies.md ("Prompts"). A request may replace one
(`ponder.<strategy>.prompt`) within bounds: at most MAX_PROMPT_CHARS characters, with the
placeholders its strategy fills (each at most once; nothing else in braces is read, and the
text is never run through `str.format`)."""

from __future__ import annotations

MAX_PROMPT_CHARS = 4096

USC = (
    "I have generated the following responses to the question: {question}\n\n"
    "{responses}\n\n"
    "Evaluate these responses.\n"
    "Select the most consistent response based on majority consensus.\n"
    'Start your answer with "The most consistent response is Response X" (without quotes).'
)
"""Universal self-consistency (Chen et al. 2023), the paper's selection prompt; responses are
numbered from 0 ("Response 0: ...")."""

AGGREGATE = (
    "Here is a question and several responses to it.\n\n"
    "Question: {question}\n\n"
    "{responses}\n\n"
    "Using these responses, write the best response to the question: keep what they get "
    "right, correct what they get wrong, and answer the question directly, in the form the "
    "question asks for, without mentioning the responses."
)
"""Generative self-aggregation (Li et al. 2025): the model writes a new answer with its
candidates as context."""

VERIFY = (
    "Here is a question and a proposed answer.\n\n"
    "Question: {question}\n\n"
    "Proposed answer: {response}\n\n"
    "Is the proposed answer correct? Answer with Yes or No only."
)
"""Generative verification (GenRM, Zhang et al. 2024, direct form): the score is P(Yes) of the
reply's first token."""

VERIFY_RATIONALE = (
    "Here is a question and a proposed answer.\n\n"
    "Question: {question}\n\n"
    "Proposed answer: {response}\n\n"
    "Check the proposed answer step by step, then say whether it is correct."
)
"""GenRM-CoT: a sampled verification rationale; the score is then P(Yes) after
VERIFY_VERDICT, averaged over the rationales."""

VERIFY_STEP = (
    "Here is a question and the beginning of a solution to it.\n\n"
    "Question: {question}\n\n"
    "Solution so far: {response}\n\n"
    "Is every step of the solution so far correct? Answer with Yes or No only."
)
"""Step-level search's `verify` scorer (a generative process verifier): P(Yes) that the
partial solution is right so far."""

VERIFY_VERDICT = "Is the proposed answer correct? Answer with Yes or No only."

PLACEHOLDERS = {"usc": ("{question}", "{responses}"), "aggregate": ("{question}", "{responses}"),
                "verify": ("{question}", "{response}")}  # fmt: skip
"""The placeholders a replacement prompt must contain, by the strategy's options key."""


def check_prompt(text: str, key: str) -> str:
    """A caller's replacement prompt, checked: bounded, with each placeholder once. Raises
    ValueError saying what is wrong (the options model turns it into a 400)."""
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt is over {MAX_PROMPT_CHARS} characters")
    for name in PLACEHOLDERS[key]:
        if text.count(name) != 1:
            raise ValueError(f"the prompt must contain {name} exactly once")
    return text


def fill(template: str, **values: str) -> str:
    """The template with each `{name}` replaced by its value, in one pass (a value that
    itself contains `{question}` is not filled again)."""
    out, pos = [], 0
    marks = sorted((template.find("{" + k + "}"), k) for k in values if "{" + k + "}" in template)
    for at, k in marks:
        out.append(template[pos:at])
        out.append(values[k])
        pos = at + len(k) + 2
    out.append(template[pos:])
    return "".join(out)


def numbered(responses: list[str]) -> str:
    """The responses as the prompts show them: "Response 0: ...", one blank line apart."""
    return "\n\n".join(f"Response {i}: {r.strip()}" for i, r in enumerate(responses))
