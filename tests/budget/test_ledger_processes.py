"""Several OS processes on one ledger, and processes killed with SIGKILL mid-flight."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ledger_backends import PG_FAST_URL, needs_postgres, pg_drop
from ledger_workload import (
    TIERS,
    Outcome,
    check_invariants,
    check_postgres_storage,
    check_sqlite_storage,
    hammer,
    open_target,
    run_queries,
)

from corl_graph.budget import ReservationRequest, TenantBudget
from corl_graph.budget._ledger import Ledger

SPAWN = multiprocessing.get_context("spawn")  # fork would copy the parent's open connections
TENANTS = ["t0"]  # one tenant, so its cap is reached well before the query caps run out


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {"kind": "sqlite", "path": str(tmp_path / "shared.db")}
        return
    prefix = f"p{os.getpid()}_{time.monotonic_ns() % 10**9}_"
    yield {"kind": "postgres", "url": PG_FAST_URL, "prefix": prefix}
    pg_drop(prefix)


def check_storage(target: dict[str, str]) -> None:
    if target["kind"] == "sqlite":
        check_sqlite_storage(target["path"])
    else:
        check_postgres_storage(target["url"], target["prefix"])


async def _with_ledger(target: dict[str, str], fn: Any) -> Any:
    ledger = open_target(target)
    try:
        return await fn(ledger)
    finally:
        await ledger.aclose()


@pytest.mark.slow
def test_processes_hammering_one_ledger_keep_every_cap(target: dict[str, str]) -> None:
    # Every process works on the SAME 16 queries of the same tenant, so caps are contended
    # across processes, not just across tasks of one event loop.
    queries = [f"q-{i}" for i in range(16)]
    asyncio.run(_with_ledger(target, lambda ledger: ledger.tenant_spend("t0")))  # create schema
    with SPAWN.Pool(2) as pool:
        parts = pool.starmap(hammer, [(target, seed, queries, TENANTS) for seed in range(2)])
    out = Outcome()
    for part in parts:
        out.merge(part)
    assert {"tenant", "query"} <= set(out.denied), out.denied
    asyncio.run(
        _with_ledger(target, lambda ledger: check_invariants(ledger, out, queries, TENANTS))
    )
    check_storage(target)


def _reserve_then_hammer(target: dict[str, str], ready: Any) -> None:
    """Child: hold one reservation it will never settle, then write until SIGKILL lands."""

    async def main() -> None:
        ledger = open_target(target)
        await ledger.reserve(
            ReservationRequest("t0", "doomed", TIERS[1], "e", 0.03, 100, 100, lease_s=30),
            reservation_id="doomed-1",
        )
        await ledger.set_tenant(TenantBudget("t0", 1e9, "total"))
        ready.set()
        while True:  # until SIGKILL lands, most likely inside a transaction
            seed = time.monotonic_ns()
            await run_queries(ledger, seed, [f"k-{i}" for i in range(8)], ["t0"])

    asyncio.run(main())


def test_sigkill_between_reserve_and_settle_stays_charged(target: dict[str, str]) -> None:
    ready = SPAWN.Event()
    process = SPAWN.Process(target=_reserve_then_hammer, args=(target, ready))
    process.start()
    try:
        assert ready.wait(60), "child never got going"
        time.sleep(0.3)
    finally:
        os.kill(process.pid or 0, signal.SIGKILL)
        process.join(10)
    assert process.exitcode == -signal.SIGKILL
    # Running totals equal a recount from the reservation rows: no half-written operation.
    check_storage(target)

    async def after_restart(ledger: Ledger) -> None:
        held = await ledger.query_spend("doomed")
        assert (held.held_usd, held.calls) == (0.03, 1)
        report = await ledger.reconcile(now=time.time() + 1)  # leases of 60 s, except doomed
        assert "doomed-1" not in report.expired
        report = await ledger.reconcile(now=time.time() + 31)
        assert "doomed-1" in report.expired
        spend = await ledger.query_spend("doomed")
        assert (spend.expired_usd, spend.committed_usd) == (0.03, 0.03)
        events = [e.event for e in await ledger.audit(query_id="doomed")]
        assert events == ["reserved", "expired"]
        await ledger.reconcile(now=float("inf"))
        for i in range(8):
            assert (await ledger.query_spend(f"k-{i}")).held_usd == 0.0

    asyncio.run(_with_ledger(target, after_restart))
    check_storage(target)
