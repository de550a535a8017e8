"""Issue 26 item 5: instructor 1.17 itself (its own environment: it pins an older openai,
.ci/outside-env instructor) against a live server, in its tools mode (a named function tool)
and its JSON-schema mode (response_format): each returns the pydantic model it asked for."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ..conftest import Server

VENV = os.environ.get("PONDER_INSTRUCTOR_VENV")
pytestmark = pytest.mark.skipif(
    not VENV,
    reason="needs instructor's environment: "
    "PONDER_INSTRUCTOR_VENV=$(bash .ci/outside-env instructor)",
)

SCRIPT = r"""
import json, sys
import instructor
from openai import OpenAI
from pydantic import BaseModel

class Person(BaseModel):
    name: str
    age: int

out = {}
for mode in ("TOOLS", "JSON_SCHEMA"):
    client = instructor.from_openai(
        OpenAI(base_url=sys.argv[1], api_key="unused"), mode=getattr(instructor.Mode, mode)
    )
    person = client.chat.completions.create(
        model="smollm2", response_model=Person, max_retries=0, max_tokens=60, seed=1,
        messages=[{"role": "user", "content": "Carlos is 78 years old. Extract the person."}],
    )
    out[mode] = person.model_dump()
print(json.dumps(out))
"""


def test_instructor_gets_its_model_in_tools_and_json_schema_modes(
    server: Server, tmp_path: Path
) -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    run = subprocess.run(
        [str(Path(VENV or "") / "bin" / "python"), str(script), f"{server.base_url}/v1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for mode in ("TOOLS", "JSON_SCHEMA"):
        assert isinstance(out[mode]["name"], str) and isinstance(out[mode]["age"], int), out
