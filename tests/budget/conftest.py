"""Fixtures for the ledger tests: one factory that opens any backend and cleans it up."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from corl_graph.budget import InMemoryLedger, Ledger, PostgresLedger, SQLiteLedger, TenantBudget

PG_URL = os.environ.get("CORL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Tests kill clients, never the server, so a commit need not wait for the server's fsync; this
# session setting (nothing global) makes the suite fast on a busy disk.
PG_FAST_URL = PG_URL + ("&" if "?" in PG_URL else "?") + "options=-csynchronous_commit%3Doff"
BACKENDS = ["memory", "sqlite", "postgres"]

MakeLedger = Callable[..., Awaitable[Ledger]]


def postgres_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when the server answers."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'corl-graph[postgres]')"
    try:
        psycopg.connect(PG_URL, connect_timeout=2).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_URL} is unreachable ({str(exc).strip()[:120]})"
    return None


_PG_REASON = postgres_reason()
needs_postgres = pytest.mark.skipif(_PG_REASON is not None, reason=_PG_REASON or "")


def pg_drop(prefix: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for table in ("audit", "tenant_totals", "query_totals", "reservations", "tenants", "meta"):
            conn.execute(f'DROP TABLE IF EXISTS "{prefix}{table}"')


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
