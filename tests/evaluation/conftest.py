"""A hand-made four-query table: every metric of the harness can be computed on paper.

query  ref   cheap "c" ($1.1e-4)   strong "s"
q1     1     1   (right)           1  (right)   $1.1e-3
q2     2     3   (wrong)           2  (right)   $1.1e-3
q3     3     3   (right)           4  (wrong)   $1.1e-3
q4     -     no answer, score 0    no answer, score 1, $2.1e-3 (110 output tokens)
"""

from __future__ import annotations

import pytest

from corl_graph.experts import OutcomeTable, PriceSheet


def _row(q: str, ref: str | None, model: str, ans: str | None, ok: float, out: int) -> dict:
    price = 1.0 if model == "c" else 10.0
    return dict(
        query_id=q,
        split="test",
        model=model,
        correct=ok,
        answer=ans,
        reference=ref,
        response=f"text {model} {q}",
        input_tokens=100,
        output_tokens=out,
        cost_usd=(100 + out) * price / 1e6,
    )


@pytest.fixture
def tiny_table() -> OutcomeTable:
    rows = [
        _row("q1", "1", "c", "1", 1.0, 10),
        _row("q1", "1", "s", "1", 1.0, 10),
        _row("q2", "2", "c", "3", 0.0, 10),
        _row("q2", "2", "s", "2", 1.0, 10),
        _row("q3", "3", "c", "3", 1.0, 10),
        _row("q3", "3", "s", "4", 0.0, 10),
        _row("q4", None, "c", None, 0.0, 10),
        _row("q4", None, "s", None, 1.0, 110),
    ]
    prices = {"c": PriceSheet(1.0, 1.0), "s": PriceSheet(10.0, 10.0)}
    return OutcomeTable.from_rows(rows, prices=prices, name="tiny")
