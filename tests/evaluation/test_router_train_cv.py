"""benchmarks/router_train_cv.py: its outer folds partition the train split and never read
the test split."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from corl_graph.experts import OutcomeTable, PriceSheet


def _load_module() -> ModuleType:
    path = Path(__file__).parents[2] / "benchmarks" / "router_train_cv.py"
    spec = importlib.util.spec_from_file_location("corl_router_train_cv", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cv = _load_module()


def _table() -> OutcomeTable:
    rows = [
        dict(query_id=f"q{i}", split="train" if i < 7 else "test", model=m, correct=float(i % 2),
             answer=str(i), input_tokens=10, output_tokens=2, cost_usd=1e-6 * (1 + (m == "b")))
        for i in range(10)
        for m in "ab"
    ]  # fmt: skip
    return OutcomeTable.from_rows(rows, prices={"a": PriceSheet(1, 1), "b": PriceSheet(2, 2)})


def test_outer_folds_partition_train_in_near_equal_parts() -> None:
    train = [f"q{i}" for i in range(7)]
    folds = cv.outer_folds(train, 3, seed=0)
    assert sorted(len(f) for f in folds) == [2, 2, 3]
    assert set().union(*folds) == set(train)
    assert sum(len(f) for f in folds) == len(train)  # disjoint
    assert folds == cv.outer_folds(train, 3, seed=0)  # reproducible
    assert folds != cv.outer_folds(train, 3, seed=1)


def test_fold_table_relabels_held_out_and_drops_test_split() -> None:
    table = _table()
    train = sorted(q for q, info in table.queries.items() if info.split == "train")
    held_out = {"q1", "q4"}
    fold = cv.fold_table(table, held_out, train)
    assert sorted(fold.queries) == train  # q7..q9 (the real test split) are gone
    assert {q.query_id for q in fold.split("test")} == held_out
    assert len(fold.split("train")) == 5
    assert fold.models == ["a", "b"]
    assert fold.outcome("q4", "b") == table.outcome("q4", "b")
    assert fold.name == table.name  # a preset is found by the table's name
