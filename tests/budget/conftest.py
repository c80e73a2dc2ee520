"""Fixtures for the ledger tests: one factory that opens any backend and cleans it up."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ledger_backends import _PG_REASON, BACKENDS, PG_FAST_URL, MakeLedger, pg_drop

from corl_graph.budget import InMemoryLedger, Ledger, PostgresLedger, SQLiteLedger, TenantBudget


@pytest.fixture
def pg_prefix() -> Any:
    """A fresh table prefix for one test; its tables are dropped afterwards."""
    if _PG_REASON is not None:
        pytest.skip(_PG_REASON)
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield prefix
    pg_drop(prefix)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgres" and _PG_REASON is not None:
        pytest.skip(_PG_REASON)
    return name


@pytest.fixture
async def make_ledger(backend: str, tmp_path: Path) -> AsyncIterator[MakeLedger]:
    """``await make_ledger(default_budget=..., clock=...)`` opens a ledger of ``backend``.

    Every call on the SQL backends opens the *same* storage, as another process would.
    """
    opened: list[Ledger] = []
    prefix = f"t{uuid.uuid4().hex[:10]}_"

    async def make(default_budget: TenantBudget | None = None, **options: Any) -> Ledger:
        ledger: Ledger
        if backend == "memory":
            ledger = InMemoryLedger(default_budget=default_budget, **options)
        elif backend == "sqlite":
            path = tmp_path / "ledger.db"
            ledger = SQLiteLedger(path, default_budget=default_budget, **options)
        else:
            ledger = PostgresLedger(
                PG_FAST_URL, default_budget=default_budget, table_prefix=prefix, **options
            )
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        await ledger.aclose()
    if backend == "postgres":
        pg_drop(prefix)
