"""Many concurrent queries with random prices and failures never break a cap, on any backend."""

from __future__ import annotations

import asyncio

from ledger_backends import MakeLedger
from ledger_workload import DEFAULT_BUDGET, Outcome, check_invariants, run_queries

TENANTS = ["t0", "t1", "t2"]


async def test_concurrent_queries_keep_every_cap(make_ledger: MakeLedger, backend: str) -> None:
    # Two ledger objects on the SQL backends: two connections racing for the same rows, as two
    # processes or replicas would. (Two InMemoryLedgers would not share anything.)
    ledgers = [await make_ledger(default_budget=DEFAULT_BUDGET)]
    if backend != "memory":
        ledgers.append(await make_ledger(default_budget=DEFAULT_BUDGET))
    queries = [f"q-{i}" for i in range(60)]
    parts = await asyncio.gather(
        *(
            run_queries(ledgers[i % len(ledgers)], seed=i, queries=queries[i::4], tenants=TENANTS)
            for i in range(4)
        )
    )
    out = Outcome()
    for part in parts:
        out.merge(part)
    # The workload must actually press on every kind of cap, or the test proves nothing.
    assert {"query", "calls", "tenant"} <= set(out.denied), out.denied
    assert out.settled and out.crashed
    await check_invariants(ledgers[0], out, queries, TENANTS)
