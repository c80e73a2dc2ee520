"""Schema 2: PostgreSQL refuses NaN, infinite and negative amounts itself (CHECK constraints),
and a version-1 ledger holding such rows (SQLite or PostgreSQL) is repaired when opened.
Schema 3: per-query totals keyed by (query id, tenant); a version-2 ledger is migrated."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

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
        assert conn.execute(f'SELECT value FROM "{pg_prefix}meta"').fetchone() == ("3",)
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
        assert conn.execute("SELECT value FROM corl_ledger_meta").fetchone() == ("3",)


_OLD_QUERY_TOTALS = (
    "CREATE TABLE {name} (query_id text PRIMARY KEY, settled_usd double precision NOT NULL, "
    "held_usd double precision NOT NULL, expired_usd double precision NOT NULL, "
    "calls bigint NOT NULL, tokens bigint NOT NULL, held_n bigint NOT NULL, "
    "expired_n bigint NOT NULL)"
)


async def _two_tenants_one_query_id(ledger: Any) -> None:
    await ledger.set_tenant(TenantBudget("acme", 5.0, "total"))
    await ledger.set_tenant(TenantBudget("beta", 5.0, "total"))
    await ledger.reserve(req("shared", 0.75))
    await ledger.reserve(ReservationRequest("beta", "shared", TIER, "gpt", 0.5, 10, 10))


async def _check_split(ledger: Any) -> None:
    acme = await ledger.query_spend("shared", tenant="acme")
    beta = await ledger.query_spend("shared", tenant="beta")
    assert (acme.held_usd, acme.calls, beta.held_usd, beta.calls) == (0.75, 1, 0.5, 1)
    assert (await ledger.query_spend("shared")).held_usd == 1.25


async def test_sqlite_version_2_query_totals_are_rekeyed_by_tenant(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SQLiteLedger(path)
    await _two_tenants_one_query_id(ledger)
    await ledger.aclose()
    with sqlite3.connect(path) as conn:  # what version 2 had: one row per query id
        conn.execute("DROP TABLE corl_ledger_query_totals")
        conn.execute(_OLD_QUERY_TOTALS.format(name="corl_ledger_query_totals"))
        conn.execute(
            "INSERT INTO corl_ledger_query_totals VALUES ('shared', 0, 1.25, 0, 2, 40, 2, 0)"
        )
        conn.execute("UPDATE corl_ledger_meta SET value = '2'")
    ledger = SQLiteLedger(path)
    try:
        await _check_split(ledger)
    finally:
        await ledger.aclose()


async def test_postgres_version_2_query_totals_are_rekeyed_by_tenant(pg_prefix: str) -> None:
    import psycopg

    async with PostgresLedger(PG_URL, table_prefix=pg_prefix) as ledger:
        await _two_tenants_one_query_id(ledger)
    name = f'"{pg_prefix}query_totals"'
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}")
        conn.execute(_OLD_QUERY_TOTALS.format(name=name))
        conn.execute(f"INSERT INTO {name} VALUES ('shared', 0, 1.25, 0, 2, 40, 2, 0)")
        conn.execute(f"UPDATE \"{pg_prefix}meta\" SET value = '2'")
    async with PostgresLedger(PG_URL, table_prefix=pg_prefix) as ledger:
        await _check_split(ledger)
        with pytest.raises(BudgetExceededError):
            await ledger.reserve(req("shared", 100.0))
    # the rebuilt table keeps the CHECK constraints of schema 2
    with (
        psycopg.connect(PG_URL, autocommit=True) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute(f"UPDATE {name} SET held_usd = 'NaN'")
