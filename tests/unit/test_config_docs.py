"""The configuration tables in docs/ name every setting, with its default (issue 24 item 7:
the settings were listed by hand in several places and drifted)."""

from __future__ import annotations

import re
from pathlib import Path

from ponder.config import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
TABLES = ("configuration.md", "security.md", "engines.md")


def _rows() -> dict[str, str]:
    """`PONDER_X` -> its table row, from every table in the configuration docs."""
    rows: dict[str, str] = {}
    for name in TABLES:
        for line in (DOCS / name).read_text(encoding="utf-8").splitlines():
            m = re.match(r"\|\s*`(PONDER_[A-Z0-9_]+)`\s*\|", line)
            if m:
                rows.setdefault(m.group(1), line)
    return rows


def test_every_setting_has_a_row_in_the_docs() -> None:
    rows = _rows()
    missing = [
        f"PONDER_{field.upper()}"
        for field in Settings.model_fields
        if f"PONDER_{field.upper()}" not in rows
    ]
    assert not missing, f"settings missing from docs/{{{','.join(TABLES)}}}: {missing}"


def test_no_row_names_a_setting_that_does_not_exist() -> None:
    known = {f"PONDER_{field.upper()}" for field in Settings.model_fields}
    unknown = sorted(set(_rows()) - known)
    assert not unknown, f"documented settings that Settings does not have: {unknown}"


def test_numeric_defaults_in_the_docs_are_the_real_ones() -> None:
    """Where a row states a plain number as the default, it is Settings' default."""
    rows = _rows()
    wrong = []
    for field, info in Settings.model_fields.items():
        row = rows.get(f"PONDER_{field.upper()}")
        default = info.default
        if row is None or isinstance(default, bool) or not isinstance(default, int | float):
            continue
        cells = [c.strip().strip("`") for c in row.split("|")[1:-1]]
        numbers = [c.split()[0] for c in cells[1:] if c and re.fullmatch(r"[0-9.]+", c.split()[0])]
        if numbers and float(numbers[0]) != float(default):
            wrong.append(f"PONDER_{field.upper()}: docs {numbers[0]}, Settings {default}")
    assert not wrong, wrong


def test_the_vllm_options_are_the_vllm_settings() -> None:
    """engines/vllm.VllmOptions takes the PONDER_VLLM_* settings whole (Settings.group): the
    same names, and the same defaults."""
    import dataclasses

    from ponder.engines.vllm import VllmOptions

    fields = {f.name: f.default for f in dataclasses.fields(VllmOptions)}
    group = Settings().group("vllm")
    assert set(fields) - {"model", "served_name"} == set(group)
    assert {k: fields[k] for k in group} == group


def test_the_upstream_engine_takes_the_upstream_settings() -> None:
    """engines/upstream.UpstreamEngine takes the PONDER_UPSTREAM_* settings whole
    (Settings.group): each is a parameter of the same name, with the same default."""
    import inspect

    from ponder.engines.upstream import UpstreamEngine

    params = inspect.signature(UpstreamEngine.__init__).parameters
    group = Settings().group("upstream")
    assert set(group) <= set(params)
    assert {k: params[k].default for k in group if k != "url"} == {
        k: v for k, v in group.items() if k != "url"
    }
