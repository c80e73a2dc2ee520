"""A tiny routing task for training tests: a synthetic outcome table (no shared data needed),
a BPE tokenizer trained on its text and a 2-layer random Llama saved to disk.

Test modules import this module by its own (unique) name, never ``from conftest import``:
the suite has several conftest.py files and that name resolves to whichever came last."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corl_graph.training import QuerySpec

from corl_graph.experts import OutcomeTable, PriceSheet, ReplayExpert


@dataclass
class TinyTask:
    table: OutcomeTable
    experts: list[ReplayExpert]
    queries: list[QuerySpec]
    model_dir: Path


def _table() -> OutcomeTable:
    rows = []
    for i in range(12):
        ref = str(i * 3)
        for model, correct, cost in (("cheap", i % 2, 1e-6), ("strong", 1, 1e-4)):
            rows.append(
                dict(
                    query_id=f"q{i}",
                    split="train",
                    task="toy",
                    prompt=f"What is {i} times 3?",
                    reference=ref,
                    model=model,
                    correct=float(correct),
                    answer=ref if correct else "0",
                    response=None,
                    input_tokens=20,
                    output_tokens=4,
                    cost_usd=cost,
                )
            )
    return OutcomeTable.from_rows(
        rows, prices={"cheap": PriceSheet(0.05, 0.05), "strong": PriceSheet(4.0, 4.0)}, name="toy"
    )


FAST, SLOW = "fast", "slow"


def fast_slow_table(n: int, *, n_train: int | None = None, name: str = "toy2") -> OutcomeTable:
    """``fast``: cheap, right on half the queries; ``slow``: 20x the price, always right. The
    first ``n_train`` queries (all when None) are the train split, the rest test."""
    n_train = n if n_train is None else n_train
    rows = []
    for i in range(n):
        ref = str(i + 2)
        for model, correct, cost in ((FAST, i % 2, 1e-5), (SLOW, 1, 2e-4)):
            rows.append(
                dict(
                    query_id=f"q{i}",
                    split="train" if i < n_train else "test",
                    task="toy",
                    prompt=f"What is {i} plus 2?",
                    reference=ref,
                    model=model,
                    correct=float(correct),
                    answer=ref if correct else "0",
                    response=None,
                    input_tokens=10,
                    output_tokens=4,
                    cost_usd=cost,
                )
            )
    prices = {FAST: PriceSheet(0.5, 0.5), SLOW: PriceSheet(10.0, 10.0)}
    return OutcomeTable.from_rows(rows, prices=prices, name=name)
