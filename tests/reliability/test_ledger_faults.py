"""The ledger's storage fails during a run: it recovers, or the run fails closed, typed.

PostgreSQL: the ledger's backend connections are terminated (``pg_terminate_backend``, what a
server restart or failover looks like to a client) in the middle of expert calls. SQLite: the
file is locked by another process past ``busy_timeout_s``, briefly or for good, or removed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from reliability_books import PRICE, check_books, tracing

from corl_graph._exceptions import LedgerError
from corl_graph.budget import Ledger, PostgresLedger, SQLiteLedger, TenantBudget
from corl_graph.experts import ChatModelExpert
from corl_graph.graph import Router, RouterConfig, RouteResult
from corl_graph.policies import AlwaysExpert
from corl_graph.testing import FakeChatModel

PG_URL = os.environ.get("CORL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BUDGET = TenantBudget("*", 100.0, "total")


def _pg_reason() -> str | None:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=2).close()
    except Exception as exc:  # no driver or no server: the PostgreSQL cases skip
        return f"PostgreSQL at {PG_URL} unavailable: {str(exc).strip()[:100]}"
    return None


needs_postgres = pytest.mark.skipif(_pg_reason() is not None, reason=str(_pg_reason()))


def _recording(calls: list[str], text: str) -> Callable[[str], str]:
    def reply(prompt: str) -> str:
        calls.append(prompt)
        return text

    return reply


def _router(ledger: Ledger, model: FakeChatModel) -> tuple[Router, InMemorySpanExporter]:
    provider, exporter = tracing()
    small = ChatModelExpert("small", model, PRICE, max_output_tokens=64, max_retries=0)
    rc = RouterConfig(
        experts=[small],
        policy=AlwaysExpert(["small"]),
        ledger=ledger,
        tracer_provider=provider,
        default_tier="high",
        query_timeout_s=10,
    )
    return Router(rc), exporter


@pytest.fixture
def pg_app() -> Iterator[tuple[str, str]]:
    """(URL tagged with a unique application_name, table prefix); tables dropped after."""
    import psycopg

    tag = uuid.uuid4().hex[:10]
    yield f"{PG_URL}?application_name=corl_rel_{tag}", f"rel{tag}_"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for table in ("audit", "tenant_totals", "query_totals", "reservations", "tenants", "meta"):
            conn.execute(f'DROP TABLE IF EXISTS "rel{tag}_{table}"')


def _terminate(app_url: str) -> int:
    import psycopg

    app = app_url.rsplit("application_name=", 1)[1]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


@needs_postgres
async def test_postgres_connections_killed_mid_run_recover(pg_app: tuple[str, str]) -> None:
    url, prefix = pg_app
    ledger = PostgresLedger(url, table_prefix=prefix, default_budget=BUDGET, pool_size=4)
    killed: list[int] = []
    calls: list[str] = []

    def reply(prompt: str) -> str:
        # Between each call's reserve and its settle: the settle meets a dead connection.
        calls.append(prompt)
        if len(calls) in (3, 9, 15):
            killed.append(_terminate(url))
        return "The answer is 4."

    router, exporter = _router(ledger, FakeChatModel(reply))
    try:
        results: list[RouteResult] = []
        for _ in range(5):  # 5 waves of 4 concurrent queries
            results += await asyncio.gather(*(router.arun(f"2 + 2? #{i}") for i in range(4)))
        assert sum(killed) >= 3, "the fault was not injected"
        assert all(r.answer == "4" for r in results)
        books = await check_books(ledger, results, exporter)
        assert books["reservations"] == 20
    finally:
        await ledger.aclose()


async def test_postgres_unreachable_fails_closed() -> None:
    ledger = PostgresLedger(
        "postgresql://postgres@127.0.0.1:1/test", connect_timeout_s=1, default_budget=BUDGET
    )
    calls: list[str] = []
    router, _ = _router(ledger, FakeChatModel(_recording(calls, "4")))
    result = await asyncio.wait_for(router.arun("2 + 2?"), 15)
    assert not calls, "an expert was called without a reservation"
    assert result.answer is None and result.cost_usd == 0.0
    assert "ledger unavailable" in (result.calls[0].error or "")
    await ledger.aclose()


def _sqlite(tmp_path: Path) -> tuple[SQLiteLedger, str]:
    path = str(tmp_path / "ledger.db")
    return SQLiteLedger(path, busy_timeout_s=0.2, default_budget=BUDGET), path


async def test_sqlite_locked_past_busy_timeout_fails_closed_then_recovers(tmp_path: Path) -> None:
    ledger, path = _sqlite(tmp_path)
    calls: list[str] = []
    router, exporter = _router(ledger, FakeChatModel(_recording(calls, "It is 4.")))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    refused = await router.arun("2 + 2?")
    assert not calls and refused.answer is None
    assert "locked" in (refused.calls[0].error or "")
    blocker.execute("ROLLBACK")
    ok = await router.arun("2 + 2?")
    assert ok.answer == "4"
    await check_books(ledger, [refused, ok], exporter)
    blocker.close()
    await ledger.aclose()


async def test_sqlite_locked_briefly_during_a_call_settles_on_retry(tmp_path: Path) -> None:
    ledger, path = _sqlite(tmp_path)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def reply(prompt: str) -> str:
        blocker.execute("BEGIN IMMEDIATE")  # held for 0.3 s, longer than busy_timeout_s
        threading.Timer(0.3, lambda: blocker.execute("ROLLBACK")).start()
        return "The answer is 4."

    router, exporter = _router(ledger, FakeChatModel(reply))
    result = await router.arun("2 + 2?")
    assert result.answer == "4"
    await check_books(ledger, [result], exporter)
    blocker.close()
    await ledger.aclose()


async def test_sqlite_file_removed_mid_run_fails_closed(tmp_path: Path) -> None:
    ledger, path = _sqlite(tmp_path)
    ok_model = FakeChatModel("The answer is 4.")
    router, _ = _router(ledger, ok_model)
    first = await router.arun("2 + 2?")

    calls: list[str] = []

    def reply(prompt: str) -> str:
        calls.append(prompt)
        os.remove(path)  # the settle of this very call has nowhere durable to go
        return "The answer is 4."

    router, _ = _router(ledger, FakeChatModel(reply))
    with pytest.raises(LedgerError, match="removed or replaced"):
        await router.arun("2 + 2?")
    after = await router.arun("2 + 2?")  # nothing can be reserved: no call is made
    assert len(calls) == 1 and after.answer is None and after.cost_usd == 0.0
    assert "removed or replaced" in (after.calls[0].error or "")
    assert first.answer == "4"
    await ledger.aclose()
