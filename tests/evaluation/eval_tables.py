"""The project's recorded outcome tables in ../shared, for tests that need real data.

Imported by its own (unique) name: ``from conftest import`` resolves to whichever of the
suite's conftest.py files was imported last."""

from __future__ import annotations

from pathlib import Path

import pytest

from corl_graph.experts import OutcomeTable

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "outcomes"


def shared_table(name: str) -> OutcomeTable:
    path = SHARED / f"{name}.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return OutcomeTable.load(path)
