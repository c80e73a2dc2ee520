"""What the ledger tests share: PostgreSQL URLs, the skip marker, table clean-up.

Test modules import this by its own (unique) name: ``from conftest import ...`` would pick up
whichever of the suite's conftest.py files was imported last, in spawned processes too."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import pytest

from corl_graph.budget import Ledger

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
