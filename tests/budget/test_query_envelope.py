"""RouterConfig(budget_hold="per_query") on every backend: one envelope per query in the ledger,
the same caps as one reservation per attempt, and spend never under-counted."""

from __future__ import annotations

import asyncio

import pytest
from ledger_backends import MakeLedger
from router_experts import TIER, router_over, started_calling, two_experts

from corl_graph import Router
from corl_graph.budget import (
    ENVELOPE_EXPERT,
    Ledger,
    PerQueryHold,
    ReservationRequest,
    TenantBudget,
)
from corl_graph.protocol import Aggregate, CallExpert
from corl_graph.testing import ScriptedPolicy


def _router(ledger: Ledger, hold: str, policy=None, **kw) -> Router:  # type: ignore[no-untyped-def]
    return router_over(ledger, policy, budget_hold=hold, **kw)


async def test_one_envelope_per_query_charges_what_per_attempt_charges(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger()
    await ledger.set_tenant(TenantBudget("x", 1.0, "total"))
    await ledger.set_tenant(TenantBudget("y", 1.0, "total"))
    per_query = await _router(ledger, "per_query").arun("2+2?", tenant="x")
    per_attempt = await _router(ledger, "per_attempt").arun("2+2?", tenant="y")
    assert per_query.answer == per_attempt.answer == "4"
    assert per_query.cost_usd == pytest.approx(per_attempt.cost_usd) and per_query.cost_usd > 0
    assert [c.status for c in per_query.calls] == ["ok", "ok"]
    x, y = await ledger.tenant_spend("x"), await ledger.tenant_spend("y")
    assert x.settled_usd == pytest.approx(y.settled_usd) == pytest.approx(per_query.cost_usd)
    assert x.held_usd == 0.0 and x.calls == 1 and y.calls == 2
    events = [(e.event, e.expert) for e in await ledger.audit(tenant="x")]
    assert events == [("reserved", ENVELOPE_EXPERT), ("settled", ENVELOPE_EXPERT)]
    assert len(await ledger.audit(tenant="y")) == 4  # reserve + settle per call


async def test_a_query_cannot_pass_its_cap_inside_its_envelope(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(default_budget=TenantBudget("*", 1.0, "total"))
    policy = ScriptedPolicy([CallExpert("a", "q")] * 4 + [Aggregate()])
    result = await _router(ledger, "per_query", policy).arun("2+2?")
    statuses = [c.status for c in result.calls]
    # Each call may cost up to ~$0.0022: three fit under $0.01 with max_expert_calls=3.
    assert statuses == ["ok", "ok", "ok", "denied"] and result.budget_exhausted
    assert result.cost_usd <= TIER.max_usd_per_query
    spend = await ledger.tenant_spend("default")
    assert spend.committed_usd == pytest.approx(result.cost_usd)


async def test_a_tenant_short_of_a_whole_cap_falls_back_to_per_attempt(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger()
    await ledger.set_tenant(TenantBudget("poor", 0.006, "total"))  # < the $0.01 envelope
    result = await _router(ledger, "per_query").arun("2+2?", tenant="poor")
    assert [c.status for c in result.calls] == ["ok", "ok"]
    audit = await ledger.audit(tenant="poor")
    assert [e.event for e in audit] == ["denied", "reserved", "settled", "reserved", "settled"]
    assert audit[0].expert == ENVELOPE_EXPERT
    assert (await ledger.tenant_spend("poor")).committed_usd <= 0.006


async def test_concurrent_queries_never_overspend_the_tenant(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    await ledger.set_tenant(TenantBudget("acme", 0.025, "total"))  # 2.5 envelopes
    router = _router(ledger, "per_query", experts=two_experts(delay_s=0.01))
    results = await asyncio.gather(*(router.arun("2+2?", tenant="acme") for _ in range(8)))
    spend = await ledger.tenant_spend("acme")
    assert spend.held_usd == 0.0 and spend.committed_usd <= 0.025 + 1e-12
    assert spend.settled_usd == pytest.approx(sum(r.cost_usd for r in results))
    assert all(r.cost_usd <= TIER.max_usd_per_query for r in results)


async def test_a_cancelled_run_settles_its_envelope_at_what_it_may_have_spent(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger(default_budget=TenantBudget("*", 1.0, "total"))
    router = _router(ledger, "per_query", experts=two_experts(delay_s=5.0))
    task = asyncio.ensure_future(router.arun("2+2?"))
    await started_calling(ledger)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    spend = await ledger.tenant_spend("default")
    # The call in flight may have been billed: charged at its worst case, nothing left held.
    assert spend.held_usd == 0.0 and 0 < spend.settled_usd < TIER.max_usd_per_query


async def test_an_envelope_whose_holder_died_stays_charged_at_the_whole_cap(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger(default_budget=TenantBudget("*", 1.0, "total"))
    run = PerQueryHold(ledger, lease_s=1.0).for_run()
    call = ReservationRequest(
        tenant="t",
        run_id="r1",
        tier=TIER,
        expert="a",
        amount_usd=0.001,
        input_tokens=10,
        max_output_tokens=10,
    )
    await run.reserve(call)  # the run's first call holds the whole cap as its envelope
    (held,) = await ledger.audit(tenant="t")
    assert held.expert == ENVELOPE_EXPERT and held.amount_usd == TIER.max_usd_per_query
    # The process dies here: nobody settles. Once the lease ends, reconcile expires it.
    report = await ledger.reconcile(now=held.at + 2.0)
    assert report.expired_usd == pytest.approx(TIER.max_usd_per_query)
    spend = await ledger.tenant_spend("t")
    assert spend.committed_usd == pytest.approx(TIER.max_usd_per_query)
