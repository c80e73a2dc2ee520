"""Every ledger input is checked at the API, on every backend: no NaN, infinity, negative
amount, unbounded or malformed id reaches storage, and a bad provider report never refunds
(issue 19, items 1, 2 and 4)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from ledger_backends import MakeLedger
from router_experts import TIER, router_over

from corl_graph import ChatModelExpert, PriceSheet
from corl_graph._exceptions import BudgetExceededError, ConfigError
from corl_graph.budget import BudgetTier, ReservationRequest, TenantBudget, Usage
from corl_graph.budget._ledger import MAX_ID_CHARS, provider_usage
from corl_graph.policies import AlwaysExpert
from corl_graph.testing import FakeChatModel

TIER_1 = BudgetTier("t1", max_usd_per_query=100.0)
NAN, INF = math.nan, math.inf


def req(amount: float = 1.0, query: str = "q1", **fields: Any) -> ReservationRequest:
    values: dict[str, Any] = {
        "tenant": "acme",
        "run_id": query,
        "tier": TIER_1,
        "expert": "gpt",
        "amount_usd": amount,
        "input_tokens": 10,
        "max_output_tokens": 10,
        "lease_s": 300.0,
    }
    values.update(fields)
    return ReservationRequest(**values)


def forged(request: ReservationRequest | Usage, **fields: Any) -> Any:
    """``request`` with ``fields`` written past the dataclass's own checks."""
    for name, value in fields.items():
        object.__setattr__(request, name, value)
    return request


async def one_dollar(make_ledger: MakeLedger) -> Any:
    ledger = await make_ledger()
    await ledger.set_tenant(TenantBudget("acme", 1.0, "total"))
    return ledger


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount_usd", NAN),
        ("amount_usd", INF),
        ("amount_usd", -1.0),
        ("lease_s", NAN),
        ("lease_s", INF),
        ("lease_s", -5.0),
        ("input_tokens", -1),
        ("max_output_tokens", 10**12),
        ("input_tokens", 1.5),
        ("run_id", ""),
        ("run_id", "x" * (MAX_ID_CHARS + 1)),
        ("run_id", "q\udc80"),
        ("run_id", "a\nb"),
        ("tenant", "\ud800"),
        ("expert", "e\x00"),
    ],
)
async def test_bad_requests_are_refused_before_storage(
    make_ledger: MakeLedger, field: str, value: object
) -> None:
    ledger = await one_dollar(make_ledger)
    with pytest.raises(ConfigError, match=field):
        req(**{field: value})
    with pytest.raises(ConfigError, match=field):  # the ledger API checks again
        await ledger.reserve(forged(req(), **{field: value}))
    spend = await ledger.tenant_spend("acme")
    assert (spend.committed_usd, spend.calls) == (0.0, 0)
    assert await ledger.audit() == []


async def test_a_nan_hold_cannot_disable_the_cap(make_ledger: MakeLedger) -> None:
    """Issue item 2: a NaN amount was granted, and then a $50 hold on a $1 budget too."""
    ledger = await one_dollar(make_ledger)
    with pytest.raises(ConfigError):
        await ledger.reserve(forged(req(), amount_usd=NAN))
    with pytest.raises(BudgetExceededError):
        await ledger.reserve(req(50.0))
    assert (await ledger.tenant_spend("acme")).committed_usd == 0.0


@pytest.mark.parametrize(
    "usage",
    [(1, 1, -10.0), (1, 1, NAN), (1, 1, INF), (-1, 1, 0.1), (1, -1_000_000, 0.1), (1, 10**10, 0)],
)
async def test_bad_settles_are_refused_and_refund_nothing(
    make_ledger: MakeLedger, usage: tuple[Any, Any, Any]
) -> None:
    """Issue item 1: a $1 tenant that settled -$10 was then granted five $1 holds."""
    ledger = await one_dollar(make_ledger)
    held = await ledger.reserve(req(1.0), reservation_id="r1")
    with pytest.raises(ConfigError):
        Usage(*usage)
    with pytest.raises(ConfigError):
        await ledger.settle(
            held.id,
            forged(
                Usage(1, 1, 0.5),
                **dict(zip(("input_tokens", "output_tokens", "cost_usd"), usage, strict=True)),
            ),
        )
    spend = await ledger.tenant_spend("acme")
    assert (spend.held_usd, spend.settled_usd) == (1.0, 0.0)  # still held, nothing refunded
    with pytest.raises(BudgetExceededError):
        await ledger.reserve(req(1.0, "q2"))
    await ledger.settle(held.id, Usage(10, 10, 0.25))
    assert (await ledger.tenant_spend("acme")).committed_usd == 0.25


async def test_malformed_ids_in_lookups_are_user_errors(make_ledger: MakeLedger) -> None:
    """A lone surrogate used to reach the SQLite driver as an untyped UnicodeEncodeError."""
    ledger = await one_dollar(make_ledger)
    bad = "r\udc80"
    with pytest.raises(ConfigError, match="reservation_id"):
        await ledger.reserve(req(), reservation_id=bad)
    with pytest.raises(ConfigError, match="reservation_id"):
        await ledger.settle(bad, Usage(1, 1, 0.0))
    with pytest.raises(ConfigError, match="reservation_id"):
        await ledger.release(bad)
    with pytest.raises(ConfigError, match="query_id"):
        await ledger.query_spend(bad)
    with pytest.raises(ConfigError, match="tenant"):
        await ledger.tenant_spend(bad)
    with pytest.raises(ConfigError, match="query_id"):
        await ledger.audit(query_id="x" * 10_000)


def test_provider_usage_charges_impossible_reports_at_the_worst_case() -> None:
    worst = {"reserved_usd": 0.02, "reserved_input_tokens": 50, "reserved_output_tokens": 100}
    fine = provider_usage(40, 80, 0.01, estimated=False, **worst)
    assert fine == Usage(40, 80, 0.01)
    over = provider_usage(40, 500, 0.05, estimated=False, **worst)  # real, if above the hold
    assert over.cost_usd == 0.05 and not over.flagged
    for bad in (
        (40, -1_000_000, -0.6),
        (NAN, 1, 0.01),
        (1, 1, NAN),
        (1, 1, -0.0001),
        (10**12, 1, 0.01),
        (1.5, 1, 0.01),
        (None, 1, 0.01),
    ):
        usage = provider_usage(*bad, estimated=False, **worst)
        assert (usage.input_tokens, usage.output_tokens, usage.cost_usd) == (50, 100, 0.02)
        assert usage.estimated and "charged at the reserved amount" in usage.flagged


async def test_negative_provider_usage_is_charged_at_the_worst_case_and_audited(
    make_ledger: MakeLedger,
) -> None:
    """Issue item 1 end to end: an expert reporting completion_tokens=-1000000 was billed
    -$0.60 a call, and a $0.001 tenant was served 5 times to end at -$3.00."""
    ledger = await make_ledger()
    await ledger.set_tenant(TenantBudget("poor", 0.005, "total"))
    liar = ChatModelExpert(
        "a",
        FakeChatModel("It is 4", input_tokens=100, output_tokens=-1_000_000),
        PriceSheet(1.0, 10.0),
        max_output_tokens=200,
        retry_backoff_s=0.0,
    )
    router = router_over(ledger, AlwaysExpert(["a"]), experts=[liar])
    results = [await router.arun("2+2?", tenant="poor", query_id=f"q{i}") for i in range(4)]
    costs = [r.cost_usd for r in results]
    worst = results[0].calls[0].reserved_usd
    assert worst > 0 and costs[0] == pytest.approx(worst)  # charged the worst case
    assert all(c >= 0 for c in costs) and sum(costs) <= 0.005 + 1e-12
    assert results[-1].budget_exhausted  # the budget ran out instead of growing
    assert results[0].calls[0].output_tokens == 200  # the reply as charged, not as reported
    spend = await ledger.tenant_spend("poor")
    assert spend.committed_usd == pytest.approx(sum(costs)) and spend.held_usd == 0.0
    flags = [e for e in await ledger.audit(tenant="poor") if e.event == "invalid_usage"]
    answered = [r for r in results if r.answer]
    assert len(flags) == len(answered) >= 2
    assert "output_tokens=-1000000" in flags[0].detail
    assert TIER.max_usd_per_query >= worst
