"""Issue 29 item 4: `ponder eval`'s report.html: the summary table, the plots by relative
path, per problem the candidates with the strategies' chosen answers highlighted; every text
escaped."""

from __future__ import annotations

from pathlib import Path

import pytest

from ponder.eval.html import write_html
from ponder.eval.records import Candidate, ProblemRecord
from ponder.eval.summary import SummaryRow

pytestmark = pytest.mark.unit


def test_the_report(tmp_path: Path) -> None:
    record = ProblemRecord(
        id="p<1>",
        gold="8",
        format="number",
        gold_parsed="8",
        candidates={
            "sampling": [
                Candidate("so 8 apples", 4),
                Candidate("<script>alert(1)</script> 3", 6),
                Candidate("8.0 in all", 3),
            ]
        },
        results={"majority_vote": {2: {"answers": ["3"]}, 3: {"answers": ["8"]}}},
    )
    row = SummaryRow("majority_vote", 3, 1, 1, 1.0, 0.5, 1.0, 13.0, 0.1, 0.2, 3.0)
    plot = tmp_path / "accuracy_vs_n.png"
    page = write_html(tmp_path, [record], [row], [plot]).read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "p&lt;1&gt;" in page
    assert "<img src='accuracy_vs_n.png'" in page
    assert "<td>majority_vote</td><td>3</td>" in page
    # the largest budget chose "8": the candidates whose answer is 8 (8 and 8.0) are marked
    assert page.count("<tr class='chosen'>") == 2
    assert "1 of 1 strategies right" in page
