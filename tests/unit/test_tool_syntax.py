"""Issue 26 item 3: which tool form a chat template has (api/tools.syntax_of), the Lark
grammar each form's required call is constrained by (compiled by llguidance), and the reader
that turns every form back into calls (answers/jsonanswers.read_tool_calls)."""

from __future__ import annotations

from pathlib import Path

import pytest
from llguidance import LLMatcher

from ponder.answers.jsonanswers import read_tool_calls, tool_calls
from ponder.api.schemas import FunctionSpec
from ponder.api.tools import SYNTAXES, syntax_of

HERMES = (Path(__file__).resolve().parents[1] / "templates" / "hermes_tools.jinja").read_text()
LLAMA3 = (
    "{%- if tools is not none %}Given the following functions, please respond with a JSON for "
    'a function call with its proper arguments. Respond in the format {"name": function '
    'name, "parameters": dictionary of argument name and its value}.{% endif %}'
)
SMOLLM2 = "{% for message in messages %}<|im_start|>{{ message['role'] }}{% endfor %}"
MISTRAL = "{%- if tools %}[AVAILABLE_TOOLS]{{ tools|tojson }}[/AVAILABLE_TOOLS]{% endif %}"
FUNCS = [
    FunctionSpec(name="get_weather", parameters={"type": "object",
                 "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    FunctionSpec(name="get_time"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("template", "name"),
    [(HERMES, "hermes"), (LLAMA3, "llama3_json"), (SMOLLM2, None), (MISTRAL, None), (None, None)],
)
def test_a_templates_tool_form_is_recognised(template: str | None, name: str | None) -> None:
    syntax = syntax_of(template)
    assert (syntax.name if syntax else None) == name


@pytest.mark.parametrize("single", [True, False])
@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_each_forms_grammar_compiles(syntax, single: bool) -> None:
    lark = syntax.grammar(FUNCS, single)
    assert "%json" in lark and '"get_weather"' in lark and '"get_time"' in lark
    assert not LLMatcher.validate_grammar(LLMatcher.grammar_from_lark(lark))
    repeated = '"\\n" call){0,7}' in lark
    assert repeated == (syntax.many and not single)


@pytest.mark.parametrize(
    "text",
    [
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
        '{"name": "get_weather", "parameters": {"city": "Oslo"}}',
        '<tool_call>\n{"arguments": {"city": "Oslo"}, "name": "get_weather"}',  # cut short
    ],
)
def test_every_form_reads_as_the_same_call(text: str) -> None:
    assert read_tool_calls(text) == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    assert tool_calls(text) == '[{"arguments":{"city":"Oslo"},"name":"get_weather"}]'


def test_several_hermes_calls_and_what_is_no_call() -> None:
    two = (
        '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {"x": 1}}\n</tool_call>'
    )
    assert [c["name"] for c in read_tool_calls(two) or []] == ["a", "b"]
    assert read_tool_calls("It is sunny in Oslo.") is None
    assert read_tool_calls('{"city": "Oslo"}') is None
    assert read_tool_calls("<tool_call>\nnot json\n</tool_call>") is None
