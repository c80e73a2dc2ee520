"""Schema 2: PostgreSQL refuses NaN, infinite and negative amounts itself (CHECK constraints),
and a version-1 ledger holding such rows (SQLite or PostgreSQL) is repaired when opened."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
from ledger_backends import PG_URL

from corl_graph._exceptions import BudgetExceededError
from corl_graph.budget import (
    BudgetTier,
    PostgresLedger,
    ReservationRequest,
    SQLiteLedger,
    TenantBudget,
    Usage,
)
from corl_graph.budget._pgschema import _CHECKS

TIER = BudgetTier("t1", max_usd_per_query=100.0)


def req(query: str, amount: float) -> ReservationRequest:
    return ReservationRequest("acme", query, TIER, "gpt", amount, 10, 10)


async def test_postgres_refuses_nan_and_negative_amounts_in_sql(pg_prefix: str) -> None:
    import psycopg

    async with PostgresLedger(PG_URL, table_prefix=pg_prefix) as ledger:
        await ledger.set_tenant(TenantBudget("acme", 5.0, "total"))
        await ledger.reserve(req("q1", 1.0), reservation_id="r1")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for sql in (
            f"UPDATE \"{pg_prefix}reservations\" SET amount_usd = 'NaN' WHERE id = 'r1'",
            f"UPDATE \"{pg_prefix}reservations\" SET charged_usd = -10 WHERE id = 'r1'",
            f"UPDATE \"{pg_prefix}reservations\" SET amount_usd = 'Infinity' WHERE id = 'r1'",
            f"UPDATE \"{pg_prefix}tenant_totals\" SET held_usd = 'NaN'",
            f"UPDATE \"{pg_prefix}tenants\" SET limit_usd = '-Infinity'",
        ):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(sql)


async def test_postgres_version_1_tables_are_repaired_and_constrained(pg_prefix: str) -> None:
    import psycopg

    async with PostgresLedger(PG_URL, table_prefix=pg_prefix) as ledger:
        await ledger.set_tenant(TenantBudget("acme", 5.0, "total"))
        await ledger.reserve(req("q1", 1.0), reservation_id="nan")
        await ledger.reserve(req("q2", 1.0), reservation_id="refund")
        await ledger.settle("refund", Usage(10, 10, 0.5))
        await ledger.reserve(req("q3", 0.5), reservation_id="fine")
    # What version 1 let in: a NaN hold, a -$10 settle, totals poisoned by both.
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for table, checks in _CHECKS.items():
            for name in checks:
                conn.execute(f'ALTER TABLE "{pg_prefix}{table}" DROP CONSTRAINT {name}')
        conn.execute(f"UPDATE \"{pg_prefix}meta\" SET value = '1'")
        conn.execute(f"UPDATE \"{pg_prefix}reservations\" SET amount_usd = 'NaN' WHERE id = 'nan'")
        conn.execute(
            f"UPDATE \"{pg_prefix}reservations\" SET charged_usd = -10 WHERE id = 'refund'"
        )
        conn.execute(f"UPDATE \"{pg_prefix}tenant_totals\" SET held_usd = 'NaN', settled_usd = -10")
    async with PostgresLedger(PG_URL, table_prefix=pg_prefix) as ledger:
        spend = await ledger.tenant_spend("acme")
        # NaN hold -> 0; the refund -> the reserved worst case ($1); the fine hold kept.
        assert (spend.held_usd, spend.settled_usd, spend.calls) == (0.5, 1.0, 3)
        assert not math.isnan(spend.committed_usd)
        flagged = {e.reservation_id for e in await ledger.audit() if e.event == "invalid_usage"}
        assert flagged == {"nan", "refund"}
        assert (await ledger.query_spend("q2")).settled_usd == 1.0
        with pytest.raises(BudgetExceededError, match="tenant"):
            await ledger.reserve(req("q4", 3.6))  # 5 - 1.5 committed = 3.5 left
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        assert conn.execute(f'SELECT value FROM "{pg_prefix}meta"').fetchone() == ("2",)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(f"UPDATE \"{pg_prefix}reservations\" SET amount_usd = 'NaN'")


async def test_sqlite_version_1_file_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    await ledger.set_tenant(TenantBudget("acme", 5.0, "total"))
    await ledger.reserve(req("q1", 1.0), reservation_id="refund")
    await ledger.settle("refund", Usage(10, 10, 0.5))
    await ledger.reserve(req("q2", 0.25), reservation_id="held")
    await ledger.aclose()
    with sqlite3.connect(path) as conn:  # what version 1 let in: a -$10 settle
        conn.execute("UPDATE corl_ledger_meta SET value = '1'")
        conn.execute("UPDATE corl_ledger_reservations SET charged_usd = -10 WHERE id = 'refund'")
        conn.execute("UPDATE corl_ledger_tenant_totals SET settled_usd = -10")
        conn.execute("UPDATE corl_ledger_query_totals SET settled_usd = -10 WHERE query_id='q1'")
    ledger = SQLiteLedger(path)
    try:
        spend = await ledger.tenant_spend("acme")
        assert (spend.settled_usd, spend.held_usd, spend.calls) == (1.0, 0.25, 2)
        assert (await ledger.query_spend("q1")).settled_usd == 1.0
        flags = [e for e in await ledger.audit() if e.event == "invalid_usage"]
        assert [e.reservation_id for e in flags] == ["refund"]
        assert "charged_usd=-10" in flags[0].detail
    finally:
        await ledger.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM corl_ledger_meta").fetchone() == ("2",)
