"""The Ledger contract, run against every backend: memory (the reference), SQLite, PostgreSQL."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from ledger_backends import MakeLedger

from corl_graph._exceptions import BudgetExceededError, ConfigError, UnknownTenantError
from corl_graph.budget import (
    BudgetTier,
    InMemoryLedger,
    Ledger,
    ReservationRequest,
    TenantBudget,
    Usage,
    export_audit,
)

LOW = BudgetTier("low", max_usd_per_query=0.01, max_expert_calls=3, max_tokens_per_query=1000)
ACME = TenantBudget("acme", limit_usd=0.05, period="day")


def req(
    query: str = "q1",
    amount: float = 0.004,
    *,
    tenant: str = "acme",
    tier: BudgetTier = LOW,
    tokens: tuple[int, int] = (100, 100),
    lease_s: float = 300.0,
) -> ReservationRequest:
    return ReservationRequest(tenant, query, tier, "gpt", amount, tokens[0], tokens[1], lease_s)


class Clock:
    """A clock the test moves by hand; starts at a fixed UTC moment (2025-01-01 12:00)."""

    def __init__(self) -> None:
        self.now = 1_735_732_800.0

    def __call__(self) -> float:
        self.now += 0.001  # strictly increasing, like real time
        return self.now


async def acme_ledger(make_ledger: MakeLedger, **options: object) -> Ledger:
    ledger = await make_ledger(**options)
    await ledger.set_tenant(ACME)
    return ledger


async def test_reserve_then_settle_charges_the_real_cost(make_ledger: MakeLedger) -> None:
    ledger = await acme_ledger(make_ledger)
    r = await ledger.reserve(req())
    assert r.status == "held" and r.amount_usd == 0.004 and r.tier == "low"
    held = await ledger.query_spend("q1")
    assert (held.held_usd, held.calls, held.tokens) == (0.004, 1, 200)
    settled = await ledger.settle(r.id, Usage(100, 30, 0.0015))
    assert settled.status == "settled"
    spend = await ledger.query_spend("q1")
    assert (spend.settled_usd, spend.held_usd, spend.calls, spend.tokens) == (0.0015, 0.0, 1, 130)
    assert (await ledger.tenant_spend("acme")).committed_usd == pytest.approx(0.0015)


async def test_every_operation_is_idempotent_by_id(make_ledger: MakeLedger) -> None:
    ledger = await acme_ledger(make_ledger)
    first = await ledger.reserve(req(), reservation_id="r-1")
    again = await ledger.reserve(req(amount=0.009), reservation_id="r-1")
    assert again == first
    await ledger.settle("r-1", Usage(10, 10, 0.001))
    await ledger.settle("r-1", Usage(10, 10, 0.003))  # a retry must not charge twice
    await ledger.release("r-1")  # nor turn a settled call into a free one
    spend = await ledger.query_spend("q1")
    assert (spend.settled_usd, spend.calls) == (0.001, 1)
    events = [e.event for e in await ledger.audit()]
    assert events == ["reserved", "settled"]


async def test_release_charges_nothing_and_is_final(make_ledger: MakeLedger) -> None:
    ledger = await acme_ledger(make_ledger)
    r = await ledger.reserve(req())
    assert (await ledger.release(r.id)).status == "released"
    assert (await ledger.settle(r.id, Usage(1, 1, 0.002))).status == "released"
    spend = await ledger.query_spend("q1")
    assert (spend.committed_usd, spend.calls, spend.tokens) == (0.0, 0, 0)


@pytest.mark.parametrize(
    ("first", "second", "scope"),
    [
        (req(amount=0.007), req(amount=0.004), "query"),
        (req(tokens=(400, 400)), req(tokens=(100, 101)), "tokens"),
    ],
)
async def test_query_caps_refuse_before_spending(
    make_ledger: MakeLedger, first: ReservationRequest, second: ReservationRequest, scope: str
) -> None:
    ledger = await acme_ledger(make_ledger)
    await ledger.reserve(first)
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(second, reservation_id="denied-1")
    assert info.value.scope == scope
    assert (await ledger.query_spend("q1")).calls == 1
    denied = [e for e in await ledger.audit() if e.event == "denied"]
    assert [d.reservation_id for d in denied] == ["denied-1"]
    assert denied[0].amount_usd == second.amount_usd and "q1" in denied[0].detail
    with pytest.raises(ConfigError):  # a denied reservation does not exist
        await ledger.settle("denied-1", Usage(1, 1, 0.0))


async def test_call_cap_counts_released_calls_as_unused(make_ledger: MakeLedger) -> None:
    ledger = await acme_ledger(make_ledger)
    ids = [(await ledger.reserve(req(amount=0.001))).id for _ in range(3)]
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(req(amount=0.001))
    assert info.value.scope == "calls"
    await ledger.release(ids[0])
    await ledger.reserve(req(amount=0.001))


async def test_tenant_cap_spans_queries_and_resets_each_period(make_ledger: MakeLedger) -> None:
    clock = Clock()
    ledger = await acme_ledger(make_ledger, clock=clock)
    for i in range(6):
        await ledger.reserve(req(f"q{i}", 0.008))
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(req("q9", 0.008))
    assert info.value.scope == "tenant"
    assert info.value.remaining_usd == pytest.approx(0.002)
    clock.now += 86_400  # the next UTC day is a new period
    await ledger.reserve(req("q9", 0.008))
    assert (await ledger.tenant_spend("acme")).held_usd == pytest.approx(0.008)
    previous_day = await ledger.tenant_spend("acme", at=clock.now - 86_400)
    assert previous_day.held_usd == pytest.approx(0.048)


async def test_unknown_tenant_and_default_budget(make_ledger: MakeLedger) -> None:
    strict = await make_ledger()
    with pytest.raises(UnknownTenantError, match="set_tenant"):
        await strict.reserve(req(tenant="nobody"))
    with pytest.raises(UnknownTenantError):
        await strict.tenant_spend("nobody")
    lenient = await make_ledger(default_budget=TenantBudget("*", 0.005, "total"))
    await lenient.reserve(req(tenant="anyone", amount=0.004))
    with pytest.raises(BudgetExceededError, match="anyone"):
        await lenient.reserve(req("q2", tenant="anyone", amount=0.004))


async def test_set_tenant_replaces_the_budget(make_ledger: MakeLedger) -> None:
    ledger = await acme_ledger(make_ledger)
    await ledger.set_tenant(TenantBudget("acme", 0.001, "day"))
    with pytest.raises(BudgetExceededError):
        await ledger.reserve(req())


async def test_expired_stay_charged_until_a_late_settle(make_ledger: MakeLedger) -> None:
    clock = Clock()
    ledger = await acme_ledger(make_ledger, clock=clock)
    dead = await ledger.reserve(req("q1", 0.006, lease_s=10))
    await ledger.reserve(req("q2", 0.002, lease_s=1000))
    assert (await ledger.reconcile()).expired == ()
    report = await ledger.reconcile(now=clock.now + 11)
    assert report.expired == (dead.id,) and report.expired_usd == pytest.approx(0.006)
    assert (await ledger.reconcile(now=clock.now + 11)).expired == ()
    spend = await ledger.query_spend("q1")
    assert (spend.expired_usd, spend.held_usd, spend.calls) == (0.006, 0.0, 1)
    with pytest.raises(BudgetExceededError):  # still charged: the cap holds
        await ledger.reserve(req("q1", 0.006))
    late = await ledger.settle(dead.id, Usage(100, 10, 0.001))
    assert late.status == "settled"
    spend = await ledger.query_spend("q1")
    assert (spend.settled_usd, spend.expired_usd) == (0.001, 0.0)
    assert (await ledger.tenant_spend("acme")).committed_usd == pytest.approx(0.003)


async def test_overrun_is_audited(make_ledger: MakeLedger) -> None:
    ledger = await acme_ledger(make_ledger)
    r = await ledger.reserve(req(amount=0.002))
    await ledger.settle(r.id, Usage(100, 900, 0.005, estimated=True))
    settled, overrun = (await ledger.audit())[-2:]
    assert (settled.event, settled.amount_usd, settled.detail) == ("settled", 0.005, "estimated")
    assert overrun.event == "overrun" and overrun.amount_usd == pytest.approx(0.003)


async def test_bad_ids_and_amounts_are_user_errors(make_ledger: MakeLedger) -> None:
    ledger = await acme_ledger(make_ledger)
    with pytest.raises(ConfigError, match="nope"):
        await ledger.settle("nope", Usage(1, 1, 0.0))
    with pytest.raises(ConfigError, match="nope"):
        await ledger.release("nope")
    with pytest.raises(ConfigError, match=">= 0"):
        await ledger.reserve(req(amount=-1.0))


async def test_audit_filters_and_export(make_ledger: MakeLedger, tmp_path: Path) -> None:
    clock = Clock()
    ledger = await make_ledger(default_budget=TenantBudget("*", 1.0, "total"), clock=clock)
    a = await ledger.reserve(req("qa", tenant="a"))
    start = clock.now + 0.0005
    b = await ledger.reserve(req("qb", tenant="b"))
    await ledger.settle(b.id, Usage(1, 2, 0.003))
    assert [e.reservation_id for e in await ledger.audit(tenant="a")] == [a.id]
    assert [e.event for e in await ledger.audit(query_id="qb")] == ["reserved", "settled"]
    assert [e.tenant for e in await ledger.audit(since=start)] == ["b", "b"]
    assert await export_audit(ledger, tmp_path / "a.jsonl") == 3
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "settled" and lines[-1]["amount_usd"] == 0.003
    assert await export_audit(ledger, tmp_path / "b.csv", "csv", tenant="b") == 2
    with (tmp_path / "b.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["event"] for r in rows] == ["reserved", "settled"] and rows[1]["output_tokens"] == "2"


async def test_matches_the_reference_on_a_random_history(make_ledger: MakeLedger) -> None:
    """Replay one random history on the backend and on InMemoryLedger: same answers, same audit."""
    rng = random.Random(7)
    clock_a, clock_b = Clock(), Clock()
    budget = TenantBudget("*", 0.03, "day")
    ledger = await make_ledger(default_budget=budget, clock=clock_a)
    reference = InMemoryLedger(default_budget=budget, clock=clock_b)
    ids: list[str] = []
    for step in range(120):
        op = _draw(rng, step, ids)
        outcomes = []
        for target in (ledger, reference):
            try:
                outcomes.append(await _apply(target, op))
            except (BudgetExceededError, ConfigError) as exc:
                outcomes.append(type(exc).__name__ + getattr(exc, "scope", ""))
        assert outcomes[0] == outcomes[1], f"step {step}: {op}"
    for q in {f"q{i}" for i in range(5)}:
        got, want = await ledger.query_spend(q), await reference.query_spend(q)
        assert got.committed_usd == pytest.approx(want.committed_usd) and got.calls == want.calls
    got_audit = [(e.event, e.reservation_id, round(e.amount_usd, 12)) for e in await ledger.audit()]
    want_audit = [
        (e.event, e.reservation_id, round(e.amount_usd, 12)) for e in await reference.audit()
    ]
    assert got_audit == want_audit


def _draw(rng: random.Random, step: int, ids: list[str]) -> tuple[object, ...]:
    op = rng.choice(["reserve", "reserve", "settle", "release", "reconcile"])
    if op == "reserve" or not ids:
        ids.append(f"r{step}")
        lease = rng.choice([0.0, 300.0])
        request = req(
            f"q{rng.randrange(5)}",
            rng.uniform(0, 0.006),
            tenant=f"t{rng.randrange(2)}",
            lease_s=lease,
        )
        return ("reserve", ids[-1], request)
    if op == "settle":
        return ("settle", rng.choice(ids), Usage(5, 5, rng.uniform(0, 0.004)))
    if op == "release":
        return ("release", rng.choice(ids))
    return ("reconcile", 1_735_732_800.0 + step * 0.01)


async def _apply(ledger: Ledger, op: tuple[object, ...]) -> object:
    match op:
        case ("reserve", str(rid), ReservationRequest() as request):
            return (await ledger.reserve(request, reservation_id=rid)).status
        case ("settle", str(rid), Usage() as usage):
            return (await ledger.settle(rid, usage)).status
        case ("release", str(rid)):
            return (await ledger.release(rid)).status
        case ("reconcile", float(now)):
            return len((await ledger.reconcile(now=now)).expired)
    raise ValueError(op)


async def test_per_query_caps_belong_to_one_tenant(make_ledger: MakeLedger) -> None:
    """Issue 19 item 10: caps were keyed by query id alone, so tenant B's first call on a
    query id tenant A had used up was refused (and B's spend showed in A's query)."""
    ledger = await make_ledger(default_budget=TenantBudget("*", 1.0, "total"))
    await ledger.reserve(req("shared", 0.009, tenant="a"))
    with pytest.raises(BudgetExceededError):
        await ledger.reserve(req("shared", 0.002, tenant="a"))
    b = await ledger.reserve(req("shared", 0.009, tenant="b"))  # B's own cap
    await ledger.settle(b.id, Usage(10, 10, 0.001))
    a_spend = await ledger.query_spend("shared", tenant="a")
    b_spend = await ledger.query_spend("shared", tenant="b")
    assert (a_spend.held_usd, a_spend.calls) == (0.009, 1)
    assert (b_spend.settled_usd, b_spend.held_usd, b_spend.calls) == (0.001, 0.0, 1)
    both = await ledger.query_spend("shared")
    assert both.committed_usd == pytest.approx(0.010) and both.calls == 2
    assert (await ledger.query_spend("shared", tenant="c")).calls == 0
