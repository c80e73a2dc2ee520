"""Every metric against a hand computation on the four-query table of conftest.py."""

from __future__ import annotations

import pytest
from eval_tables import shared_table

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier, TierSet
from corl_graph.evaluation import aiq, evaluate_policy, upper_hull
from corl_graph.experts import OutcomeTable, replay_experts
from corl_graph.policies import AlwaysExpert, Cascade, ControllerOnly

TIERS = TierSet([BudgetTier("low", 0.0015), BudgetTier("high", 0.01)])


async def _eval(table: OutcomeTable, policy, tier: str):  # type: ignore[no-untyped-def]
    return await evaluate_policy(table, replay_experts(table), policy, TIERS, tier, controller="c")


async def test_single_strong_model(tiny_table: OutcomeTable) -> None:
    m = await _eval(tiny_table, AlwaysExpert(["s"]), "high")
    assert m.accuracy == 0.75  # q1, q2 by reference; q4 by s's recorded score
    assert m.mean_cost_usd == pytest.approx((3 * 1.1e-3 + 2.1e-3) / 4)
    # p95, linear between order statistics: rank 0.95 * 3 = 2.85 between 1.1e-3 and 2.1e-3
    assert m.p95_cost_usd == pytest.approx(1.1e-3 + 0.85 * 1.0e-3)
    assert (m.expert_call_ratio, m.calls_per_query, m.cap_violations) == (1.0, 1.0, 0)


async def test_controller_only(tiny_table: OutcomeTable) -> None:
    m = await _eval(tiny_table, ControllerOnly("c"), "low")
    assert m.accuracy == 0.5
    assert m.mean_cost_usd == pytest.approx(1.1e-4)
    assert m.expert_call_ratio == 0.0  # the controller's own model is not an escalation
    assert m.calls_per_query == 1.0


async def test_vote_and_ties(tiny_table: OutcomeTable) -> None:
    m = await _eval(tiny_table, Cascade(["c", "s"], agree=2), "high")
    # q1 agree -> right; q2 tie -> the pricier s -> right; q3 tie -> s -> wrong;
    # q4 no answers -> s's text -> its score 1.
    assert m.accuracy == 0.75
    assert m.calls_per_query == 2.0
    assert m.mean_cost_usd == pytest.approx((3 * 1.21e-3 + 2.21e-3) / 4)


async def test_cap_is_never_exceeded(tiny_table: OutcomeTable) -> None:
    # s reserves (100 + 110) tokens x $10/M = $2.1e-3 > the low cap: every call is refused.
    m = await _eval(tiny_table, AlwaysExpert(["s"]), "low")
    assert (m.cap_violations, m.calls_per_query, m.accuracy) == (0, 0.0, 0.0)
    assert m.budget_exhausted_share == 1.0


def test_aiq_by_hand() -> None:
    points = [(1.1e-4, 0.5), (1.35e-3, 0.75)]
    # trapezoid over [c_min, c_max] / c_max
    expected = (1.35e-3 - 1.1e-4) * (0.5 + 0.75) / 2 / 1.35e-3
    assert aiq(points, c_min=1.1e-4, c_max=1.35e-3) == pytest.approx(expected)
    # A dominated point and a point under the hull change nothing.
    more = [*points, (1.0e-3, 0.5), (5e-4, 0.55)]
    assert aiq(more, c_min=1.1e-4, c_max=1.35e-3) == pytest.approx(expected)
    # Flat right of the priciest point, zero left of the cheapest.
    assert aiq([(1.0, 0.5)], c_min=0.0, c_max=2.0) == pytest.approx(0.25)
    assert upper_hull([(1, 0.5), (2, 0.4), (3, 0.9), (2, 0.6)]) == [(1, 0.5), (3, 0.9)]
    with pytest.raises(ConfigError):
        aiq([], c_min=0.0, c_max=1.0)


@pytest.mark.parametrize(
    ("name", "expected"), [("routerbench_arc", 0.911), ("routerbench_mbpp", 0.680)]
)
def test_aiq_matches_the_data_readme(name: str, expected: float) -> None:
    table = shared_table(name)
    test = [q for q, i in table.queries.items() if i.split == "test"]
    points = []
    for m in table.models:
        acc = sum(table.outcome(q, m).correct for q in test) / len(test)
        cost = sum(table.outcome(q, m).cost_usd for q in test) / len(test)
        points.append((cost, acc))
    costs = [c for c, _ in points]
    assert aiq(points, c_min=min(costs), c_max=max(costs)) == pytest.approx(expected, abs=0.0015)
