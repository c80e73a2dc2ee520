"""The ledger holds money per run of a query: every reservation the router makes names the
run (``RouterResult.run_id``), so two runs of one query id each get the tier's whole cap, and
the run's spend is found under that id. ``ReservationRequest.query_id`` is the deprecated old
name of ``run_id``."""

import warnings

import pytest

from corl_graph import (
    BudgetTier,
    ChatModelExpert,
    ConfigError,
    InMemoryLedger,
    PriceSheet,
    Router,
    RouterConfig,
    TenantBudget,
    TierSet,
)
from corl_graph.budget import Reservation, ReservationRequest
from corl_graph.protocol import CallExpert
from corl_graph.testing import FakeChatModel, ScriptedPolicy

# One call of "e" costs 100 * 1e-6 + 20 * 1e-6 = 1.2e-4 and reserves up to 3e-4: a cap of
# 4e-4 allows one call per run, so runs that shared a cap would refuse the second one.
TIER = BudgetTier("only", 4e-4)


class RecordingLedger(InMemoryLedger):
    """An in-memory ledger that keeps every request it was asked to hold."""

    def __init__(self) -> None:
        super().__init__(default_budget=TenantBudget("*", 1.0, "total"))
        self.requests: list[ReservationRequest] = []

    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation:
        self.requests.append(request)
        return await super().reserve(request, reservation_id=reservation_id)


def _router(ledger: RecordingLedger) -> Router:
    expert = ChatModelExpert(
        "e",
        FakeChatModel("4", input_tokens=100, output_tokens=20),
        PriceSheet(1.0, 1.0),
        max_output_tokens=200,
        retry_backoff_s=0.0,
    )
    return Router(
        RouterConfig(
            experts=[expert],
            policy=ScriptedPolicy([CallExpert("e", "2+2?")]),
            tiers=TierSet([TIER]),
            default_tier="only",
            ledger=ledger,
        )
    )


async def test_reservations_name_the_run_and_each_run_gets_the_whole_cap() -> None:
    ledger = RecordingLedger()
    router = _router(ledger)
    first = await router.arun("2+2?", query_id="q1")
    second = await router.arun("2+2?", query_id="q1")
    assert first.query_id == second.query_id == "q1"
    assert first.run_id != second.run_id and first.run_id.startswith("q1:")
    assert [c.status for c in (*first.calls, *second.calls)] == ["ok", "ok"]
    by_run = {r.run_id for r in ledger.requests}
    assert by_run == {first.run_id, second.run_id}, "every hold names its run, not the query"
    for result in (first, second):
        spend = await ledger.query_spend(result.run_id, tenant="default")
        assert spend.committed_usd == pytest.approx(result.cost_usd) and spend.calls == 1
    assert (await ledger.query_spend("q1")).calls == 0  # nothing is kept under the bare query id


def test_query_id_is_a_deprecated_alias_of_run_id() -> None:
    new = ReservationRequest("acme", "r1", TIER, "e", 1e-4, 10, 10)
    with pytest.warns(DeprecationWarning, match="run_id"):
        old = ReservationRequest(
            tenant="acme",
            query_id="r1",
            tier=TIER,
            expert="e",
            amount_usd=1e-4,
            input_tokens=10,
            max_output_tokens=10,
        )
    assert old == new
    with pytest.warns(DeprecationWarning, match="run_id"):
        assert new.query_id == "r1"
    with warnings.catch_warnings(), pytest.raises(ConfigError, match="run_id only"):
        warnings.simplefilter("ignore", DeprecationWarning)
        ReservationRequest("acme", "r1", TIER, "e", 1e-4, 10, 10, query_id="r2")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="max_output_tokens"):
        ReservationRequest("acme", "r1", TIER, "e", 1e-4, 10)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="run_id"):
        ReservationRequest("acme", "", TIER, "e", 1e-4, 10, 10)
