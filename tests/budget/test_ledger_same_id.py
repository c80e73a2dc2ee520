"""One reservation id reserved concurrently for two query ids (a client retrying a reserve
with another query id, or two replicas racing on one id): exactly one reservation exists and
the totals count it once (issue 19, item 3: PostgreSQL counted it twice in 8 of 10 rounds)."""

from __future__ import annotations

import asyncio

import pytest
from ledger_backends import MakeLedger

from corl_graph.budget import BudgetTier, InMemoryLedger, ReservationRequest, TenantBudget, Usage

TIER = BudgetTier("t1", max_usd_per_query=1.0)


def req(query: str) -> ReservationRequest:
    return ReservationRequest("acme", query, TIER, "gpt", 0.4, 10, 10)


async def test_one_id_reserved_for_two_queries_at_once_counts_once(
    make_ledger: MakeLedger,
) -> None:
    # Two ledger objects on one storage (two replicas): on PostgreSQL, two connections.
    a = await make_ledger()
    b = a if isinstance(a, InMemoryLedger) else await make_ledger()
    await a.set_tenant(TenantBudget("acme", 100.0, "total"))
    for round_ in range(10):
        rid = f"r{round_}"
        got = await asyncio.gather(
            a.reserve(req(f"q{round_}a"), reservation_id=rid),
            b.reserve(req(f"q{round_}b"), reservation_id=rid),
        )
        assert got[0] == got[1], f"round {round_}: two different reservations for one id"
        await a.settle(rid, Usage(10, 10, 0.1))
    await a.reconcile(now=10**10)
    spend = await a.tenant_spend("acme")
    assert spend.held_usd == 0.0 and spend.expired_usd == 0.0
    assert (spend.settled_usd, spend.calls) == (pytest.approx(1.0), 10)
    per_query = [await a.query_spend(f"q{i}{side}") for i in range(10) for side in "ab"]
    assert sum(s.calls for s in per_query) == 10
    assert sum(s.held_usd for s in per_query) == 0.0
    assert sum(s.settled_usd for s in per_query) == pytest.approx(1.0)
    # And the budget is usable to its end: nothing phantom stays held.
    await a.set_tenant(TenantBudget("acme", 1.4, "total"))
    await a.reserve(req("last"))
