"""RouterConfig(budget_hold="leased") and BudgetLeases on every backend: per-query envelopes
carved in memory from tenant slices held on the ledger; no tenant overspends, a slice settles
at what its queries cost, and a dead holder's slice stays charged in full, never less."""

from __future__ import annotations

import asyncio
import time

import pytest
from ledger_backends import MakeLedger
from router_experts import TIER, router_over, started_calling, two_experts

from corl_graph import Router, RouterConfig
from corl_graph._exceptions import BudgetExceededError, ConfigError, LedgerError
from corl_graph.budget import (
    LEASE_EXPERT,
    BudgetLeases,
    InMemoryLedger,
    Ledger,
    Reservation,
    ReservationRequest,
    TenantBudget,
    Usage,
)
from corl_graph.policies import AlwaysExpert
from corl_graph.protocol import Aggregate, CallExpert
from corl_graph.testing import ScriptedPolicy


def _router(ledger: Ledger, slice_usd: float = 1.0, policy=None, **kw) -> Router:  # type: ignore[no-untyped-def]
    return router_over(ledger, policy, budget_hold="leased", budget_lease_usd=slice_usd, **kw)


def _request(tenant: str, amount: float, query_id: str = "q") -> ReservationRequest:
    return ReservationRequest(tenant, query_id, TIER, "a", amount, 10, 10)


async def test_many_queries_share_one_slice_and_settle_at_their_cost(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger()
    await ledger.set_tenant(TenantBudget("acme", 5.0, "day"))
    async with _router(ledger) as router:
        results = [await router.arun("2+2?", tenant="acme") for _ in range(5)]
        assert all(r.answer == "4" and r.cost_usd > 0 for r in results)
        open_slice = await ledger.tenant_spend("acme")
        assert open_slice.held_usd == pytest.approx(1.0)  # the whole slice, while it is open
    spend = await ledger.tenant_spend("acme")
    assert spend.held_usd == 0.0
    assert spend.settled_usd == pytest.approx(sum(r.cost_usd for r in results))
    events = [(e.event, e.expert) for e in await ledger.audit(tenant="acme")]
    assert events == [("reserved", LEASE_EXPERT), ("settled", LEASE_EXPERT)]


async def test_slices_rotate_when_full(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(default_budget=TenantBudget("*", 1.0, "total"))
    # a query costs $0.0006 and holds a $0.01 envelope while it runs: a $0.012 slice has
    # room for an envelope four times, so eight queries need more than one slice
    router = _router(ledger, slice_usd=0.012)
    results = [await router.arun("2+2?") for _ in range(8)]
    await router.aclose()
    leases = router.config.leases
    assert leases is not None and leases.slices_opened == leases.slices_closed >= 2
    spend = await ledger.tenant_spend("default")
    assert spend.held_usd == 0.0
    assert spend.settled_usd == pytest.approx(sum(r.cost_usd for r in results))
    assert [e.event for e in await ledger.audit()] == ["reserved", "settled"] * leases.slices_opened


async def test_a_query_cannot_pass_its_cap_inside_a_leased_envelope(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger(default_budget=TenantBudget("*", 1.0, "total"))
    policy = ScriptedPolicy([CallExpert("a", "q")] * 4 + [Aggregate()])
    async with _router(ledger, policy=policy) as router:
        result = await router.arun("2+2?")
    assert [c.status for c in result.calls] == ["ok", "ok", "ok", "denied"]
    assert result.budget_exhausted and result.cost_usd <= TIER.max_usd_per_query
    assert (await ledger.tenant_spend("default")).committed_usd == pytest.approx(result.cost_usd)


async def test_concurrent_queries_near_the_limit_never_overspend(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger()
    await ledger.set_tenant(TenantBudget("acme", 0.025, "total"))  # < one $1 slice
    router = _router(ledger, experts=two_experts(delay_s=0.01))
    results = await asyncio.gather(*(router.arun("2+2?", tenant="acme") for _ in range(8)))
    await router.aclose()
    spend = await ledger.tenant_spend("acme")
    assert spend.held_usd == 0.0 and spend.committed_usd <= 0.025 + 1e-12
    assert spend.settled_usd == pytest.approx(sum(r.cost_usd for r in results))
    assert all(r.cost_usd <= TIER.max_usd_per_query for r in results)
    # the slices the ledger granted were just big enough for one envelope each
    granted = [e for e in await ledger.audit(tenant="acme") if e.event == "reserved"]
    assert granted and all(e.amount_usd <= TIER.max_usd_per_query + 1e-12 for e in granted)


async def test_a_tenant_short_of_a_whole_cap_falls_back_to_per_attempt(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger()
    await ledger.set_tenant(TenantBudget("poor", 0.006, "total"))  # < the $0.01 envelope
    async with _router(ledger) as router:
        result = await router.arun("2+2?", tenant="poor")
    assert [c.status for c in result.calls] == ["ok", "ok"]
    audit = await ledger.audit(tenant="poor")
    # the $1 slice, then a slice of the envelope's size, refused; then one per attempt
    assert [e.event for e in audit] == ["denied", "denied"] + ["reserved", "settled"] * 2
    assert {e.expert for e in audit[2:]} == {"a", "b"}
    assert (await ledger.tenant_spend("poor")).committed_usd <= 0.006


async def test_a_cancelled_run_settles_into_its_slice(make_ledger: MakeLedger) -> None:
    ledger = await make_ledger(default_budget=TenantBudget("*", 1.0, "total"))
    router = _router(ledger, experts=two_experts(delay_s=5.0))
    task = asyncio.ensure_future(router.arun("2+2?"))
    await started_calling(ledger)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await router.aclose()
    spend = await ledger.tenant_spend("default")
    # the call in flight may have been billed: charged at its worst case, nothing left held
    assert spend.held_usd == 0.0 and 0 < spend.settled_usd < TIER.max_usd_per_query


async def test_a_dead_holders_slice_stays_charged_in_full_until_settled(
    make_ledger: MakeLedger,
) -> None:
    ledger = await make_ledger(default_budget=TenantBudget("*", 5.0, "total"))
    leases = BudgetLeases(ledger, slice_usd=0.5, lease_s=60.0)
    r = await leases.reserve(_request("t", 0.01))
    await leases.settle(r.id, Usage(10, 5, 0.004))
    # The process dies here: nobody settles the slice. Once its lease ends, it expires.
    expires = max(e.at for e in await ledger.audit(tenant="t")) + 61.0
    report = await ledger.reconcile(now=expires)
    assert report.expired_usd == pytest.approx(0.5)
    assert (await ledger.tenant_spend("t")).committed_usd == pytest.approx(0.5)
    # A late close (the process came back, or aclose ran late) charges the real cost.
    await leases.aclose()
    spend = await ledger.tenant_spend("t")
    assert spend.committed_usd == pytest.approx(0.004) and spend.expired_usd == 0.0


async def test_operations_are_idempotent_by_id() -> None:
    ledger = InMemoryLedger(default_budget=TenantBudget("*", 5.0, "total"))
    leases = BudgetLeases(ledger, slice_usd=1.0)
    first = await leases.reserve(_request("t", 0.01), reservation_id="r1")
    again = await leases.reserve(_request("t", 0.01), reservation_id="r1")
    assert again == first and leases.open_usd("t") == pytest.approx(0.99)
    settled = await leases.settle("r1", Usage(10, 5, 0.004))
    assert settled.status == "settled" and await leases.settle("r1", Usage(1, 1, 9.0)) == settled
    assert await leases.reserve(_request("t", 0.01), reservation_id="r1") == settled
    assert leases.open_usd("t") == pytest.approx(0.996)
    released = await leases.release((await leases.reserve(_request("t", 0.02))).id)
    assert released.status == "released" and leases.open_usd("t") == pytest.approx(0.996)
    with pytest.raises(ConfigError, match="no reservation"):
        await leases.settle("never-reserved", Usage(1, 1, 0.1))
    await leases.aclose()
    assert (await ledger.tenant_spend("t")).settled_usd == pytest.approx(0.004)


async def test_a_request_bigger_than_the_slice_gets_a_slice_of_its_size() -> None:
    ledger = InMemoryLedger(default_budget=TenantBudget("*", 5.0, "total"))
    leases = BudgetLeases(ledger, slice_usd=0.05)
    await leases.reserve(_request("t", 0.2))
    assert (await ledger.tenant_spend("t")).held_usd == pytest.approx(0.2)
    with pytest.raises(BudgetExceededError) as refused:
        await leases.reserve(_request("t", 6.0))
    assert refused.value.scope == "tenant"


class _FlakySettle(InMemoryLedger):
    """A ledger whose next ``fail`` settles raise LedgerError (an outage)."""

    def __init__(self, fail: int) -> None:
        super().__init__(default_budget=TenantBudget("*", 5.0, "total"))
        self.fail = fail

    async def settle(self, reservation_id: str, usage: Usage) -> Reservation:
        if self.fail > 0:
            self.fail -= 1
            raise LedgerError("ledger unreachable")
        return await super().settle(reservation_id, usage)


async def test_a_slice_the_ledger_cannot_settle_stays_held_and_is_retried() -> None:
    ledger = _FlakySettle(fail=1)
    leases = BudgetLeases(ledger, slice_usd=0.01)
    r = await leases.reserve(_request("t", 0.01))  # slice 1 is full after this one
    await leases.settle(r.id, Usage(10, 5, 0.004))  # closing slice 1 fails: kept, no raise
    assert (await ledger.tenant_spend("t")).held_usd == pytest.approx(0.01)
    r2 = await leases.reserve(_request("t", 0.01))  # opening slice 2 retries slice 1 first
    spend = await ledger.tenant_spend("t")
    assert spend.settled_usd == pytest.approx(0.004) and spend.held_usd == pytest.approx(0.01)
    ledger.fail = 5
    await leases.settle(r2.id, Usage(10, 5, 0.006))  # closing slice 2 fails too
    with pytest.raises(LedgerError, match="could not be settled"):
        await leases.aclose()
    assert (await ledger.tenant_spend("t")).held_usd == pytest.approx(0.01)
    ledger.fail = 0
    await leases.aclose()  # a later aclose settles what the first could not
    spend = await ledger.tenant_spend("t")
    assert spend.held_usd == 0.0 and spend.settled_usd == pytest.approx(0.010)


def test_bad_lease_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="budget_lease_usd"):
        _router(InMemoryLedger(), slice_usd=0.0)
    with pytest.raises(ConfigError, match="lease_s"):
        BudgetLeases(InMemoryLedger(), slice_usd=1.0, lease_s=-1)
    with pytest.raises(ConfigError, match="'leased'"):
        RouterConfig(experts=two_experts(), policy=AlwaysExpert(["a"]), budget_hold="lease")  # type: ignore[arg-type]


def test_the_sync_wrapper_works_across_event_loops() -> None:
    ledger = InMemoryLedger(default_budget=TenantBudget("*", 1.0, "total"))
    router = _router(ledger, slice_usd=0.015)  # every query opens a slice: the lock is used
    costs = [router.run("2+2?").cost_usd for _ in range(3)]  # one event loop per call
    asyncio.run(router.aclose())
    spend = asyncio.run(ledger.tenant_spend("default"))
    assert spend.held_usd == 0.0 and spend.settled_usd == pytest.approx(sum(costs))


async def test_a_slice_of_an_ended_day_is_not_used_for_the_next() -> None:
    # the ledger's clock says two days ago, so every slice it grants is charged to a day
    # that has ended: each reservation needs a slice of its own (of the current period)
    two_days_ago = time.time() - 2 * 86400
    ledger = InMemoryLedger(
        default_budget=TenantBudget("*", 5.0, "day"), clock=lambda: two_days_ago
    )
    leases = BudgetLeases(ledger, slice_usd=1.0)
    first = await leases.reserve(_request("t", 0.01))
    second = await leases.reserve(_request("t", 0.01))
    assert leases.slices_opened == 2
    await leases.settle(first.id, Usage(10, 5, 0.004))
    assert leases.slices_closed == 1  # the ended day's slice closes with its last reservation
    await leases.settle(second.id, Usage(10, 5, 0.004))
    await leases.aclose()
    spend = await ledger.tenant_spend("t", at=two_days_ago)
    assert spend.held_usd == 0.0 and spend.settled_usd == pytest.approx(0.008)


class _DeadThenAlive(InMemoryLedger):
    """A ledger that cannot reserve while ``dead`` (an outage), then recovers."""

    def __init__(self) -> None:
        super().__init__(default_budget=TenantBudget("*", 1.0, "total"))
        self.dead = True

    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation:
        if self.dead:
            raise LedgerError("ledger unreachable")
        return await super().reserve(request, reservation_id=reservation_id)


async def test_an_unreachable_ledger_fails_closed_and_loses_nothing() -> None:
    ledger = _DeadThenAlive()
    async with _router(ledger) as router:
        down = await router.arun("2+2?")
        # no slice, no envelope: the calls fail without reaching an expert, nothing is charged
        assert [c.status for c in down.calls] == ["failed", "failed"] and down.cost_usd == 0
        assert down.input_tokens == down.output_tokens == 0
        assert all("ledger unreachable" in (c.error or "") for c in down.calls)
        assert router.config.leases is not None
        assert router.config.leases.slices_opened == 0
        ledger.dead = False
        up = await router.arun("2+2?")
        assert up.answer == "4" and router.config.leases.slices_opened == 1
    spend = await ledger.tenant_spend("default")
    assert spend.held_usd == 0.0 and spend.settled_usd == pytest.approx(up.cost_usd)
