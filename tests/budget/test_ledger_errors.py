"""Broken storage and bad configuration surface as typed errors that name the fix."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ledger_backends import PG_URL, needs_postgres

import corl_graph.budget as budget
from corl_graph._exceptions import ConfigError, LedgerError
from corl_graph.budget import (
    InMemoryLedger,
    PostgresLedger,
    SQLiteLedger,
    TenantBudget,
    open_ledger,
)


def test_exports_are_sorted_and_public() -> None:
    # ruff's RUF022 order: CONSTANTS first, then the rest case-sensitively
    assert budget.__all__ == sorted(budget.__all__, key=lambda n: (not n.isupper(), n))
    public = {n for n in dir(budget) if not n.startswith("_")}
    assert set(budget.__all__) == public - {"annotations"}


def test_open_ledger_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_ledger("memory://"), InMemoryLedger)
    ledger = open_ledger(f"sqlite:///{tmp_path}/a.db", default_budget=TenantBudget("*", 1.0))
    assert isinstance(ledger, SQLiteLedger) and ledger.path == f"{tmp_path}/a.db"
    assert isinstance(open_ledger("sqlite:///:memory:"), SQLiteLedger)
    for url in ("postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"):
        assert isinstance(open_ledger(url, table_prefix="x_"), PostgresLedger)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://x/y", "unknown ledger URL scheme 'mysql'.*sqlite:///"),
        ("ledger.db", "no scheme"),
        ("sqlite://", "needs a path"),
        ("sqlite:///", "needs a path"),
    ],
)
def test_bad_urls_name_the_accepted_ones(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_ledger(url)


def test_options_are_checked_per_backend() -> None:
    with pytest.raises(ConfigError, match=r"table_prefix.*it takes: default_budget"):
        open_ledger("memory://", table_prefix="x")
    with pytest.raises(ConfigError, match="table_prefix"):
        PostgresLedger(PG_URL, table_prefix="bad-prefix;")
    with pytest.raises(ConfigError, match="synchronous"):
        SQLiteLedger(":memory:", synchronous="off")  # type: ignore[arg-type]


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_ledger(f"sqlite:///{tmp_path}/nope/ledger.db")


def test_corrupt_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a database, just bytes " * 200)
    with pytest.raises(LedgerError, match=r"ledger\.db.*move it away"):
        SQLiteLedger(path)


def test_another_apps_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    conn.close()
    with pytest.raises(LedgerError, match=r"not a corl_graph ledger \(tables: users\)"):
        SQLiteLedger(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    SQLiteLedger(path)  # creates the tables; the worker thread is a daemon
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE corl_ledger_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(LedgerError, match=r"schema version 99.*upgrade corl_graph"):
        SQLiteLedger(path)


async def test_a_closed_ledger_says_so(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "l.db")
    await ledger.aclose()
    await ledger.aclose()  # twice is fine
    with pytest.raises(ConfigError, match="closed"):
        await ledger.query_spend("q")


async def test_dead_database_port_fails_fast_and_typed() -> None:
    ledger = open_ledger("postgresql://postgres:s3cret@127.0.0.1:1/test")
    start = time.monotonic()
    with pytest.raises(LedgerError, match="cannot connect") as info:
        await ledger.query_spend("q")
    assert time.monotonic() - start < 5
    assert "s3cret" not in str(info.value) and "***" in str(info.value)
    with pytest.raises(LedgerError):
        await ledger.connect()  # type: ignore[attr-defined]
    await ledger.aclose()


@needs_postgres
async def test_wrong_database_name_is_a_ledger_error() -> None:
    ledger = PostgresLedger(PG_URL.rsplit("/", 1)[0] + "/no_such_db_corl", table_prefix="x_")
    with pytest.raises(LedgerError, match="no_such_db_corl"):
        await ledger.connect()
    await ledger.aclose()


def test_psycopg_is_imported_only_for_postgres() -> None:
    code = (
        "import sys, asyncio; from corl_graph.budget import open_ledger; "
        "l = open_ledger('sqlite:///:memory:'); open_ledger('postgresql://u@h/d'); "
        "print('psycopg' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
