"""Per-tier Lagrange multipliers: the dual-ascent step on hand-computed numbers."""

from __future__ import annotations

import json
import math

import pytest
from corl_graph.training import (
    TierMultipliers,
    dual_ascent,
    lagrangian_reward,
    target_penalty,
)

from corl_graph import ConfigError
from corl_graph.budget import BudgetTier


def test_dual_ascent_moves_by_lr_times_relative_violation() -> None:
    # spend 3x the target: violation 2, lr 0.1 -> +0.2
    assert dual_ascent(0.2, 3e-3, 1e-3, lr=0.1, max_lambda=10.0) == pytest.approx(0.4)
    # spend half the target: violation -0.5 -> 0.3 - 0.05
    assert dual_ascent(0.3, 5e-4, 1e-3, lr=0.1, max_lambda=10.0) == pytest.approx(0.25)
    # projected onto [0, max_lambda]
    assert dual_ascent(0.01, 0.0, 1e-3, lr=0.1, max_lambda=10.0) == 0.0
    assert dual_ascent(9.9, 1.0, 1e-3, lr=0.1, max_lambda=10.0) == 10.0


def test_dual_ascent_rejects_nan_and_negative_costs() -> None:
    for bad in (math.nan, -1.0, math.inf):
        with pytest.raises(ConfigError):
            dual_ascent(0.0, bad, 1e-3, lr=0.1, max_lambda=1.0)


def test_lagrangian_reward_and_target_penalty_by_hand() -> None:
    assert lagrangian_reward(1.0, 5e-4, 1e-3, 0.4) == pytest.approx(0.8)
    assert lagrangian_reward(0.0, 2e-3, 1e-3, 1.5) == pytest.approx(-3.0)
    assert target_penalty(1.25e-3, 1e-3) == pytest.approx(0.25)
    assert target_penalty(1e-3, 1e-3) == 0.0


def test_multipliers_update_per_tier_and_round_trip() -> None:
    m = TierMultipliers.for_tiers(["low", "medium", "high"], lr=0.5, init=0.1)
    targets = {"low": 1e-4, "medium": 1e-3, "high": 1e-2}
    # low overspends 2x (+0.5), medium on target (unchanged), high spends a tenth (-0.45 -> 0)
    new = m.update({"low": 2e-4, "medium": 1e-3, "high": 1e-3}, targets)
    assert new == pytest.approx({"low": 0.6, "medium": 0.1, "high": 0.0})
    # a tier without episodes this iteration keeps its value
    m.update({"low": 1e-4}, targets)
    assert m["low"] == pytest.approx(0.6) and m["medium"] == pytest.approx(0.1)
    assert m.metrics() == {"lagrange/low": m["low"], "lagrange/medium": 0.1, "lagrange/high": 0.0}
    restored = TierMultipliers.from_state_dict(json.loads(json.dumps(m.state_dict())))
    assert restored.values == m.values and restored.lr == 0.5


def test_multiplier_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="lr"):
        TierMultipliers.for_tiers(["low"], lr=0.0)
    with pytest.raises(ConfigError, match="max_lambda"):
        TierMultipliers({"low": 20.0}, max_lambda=10.0)
    with pytest.raises(ConfigError, match="no multiplier"):
        TierMultipliers.for_tiers(["low"]).update({"high": 1.0}, {"high": 1.0})
    with pytest.raises(ConfigError, match="TierMultipliers state"):
        TierMultipliers.from_state_dict({"values": {}})


def test_tier_target_is_checked_against_the_cap() -> None:
    assert BudgetTier("low", 1e-3).target_usd == 1e-3
    assert BudgetTier("low", 1e-3, target_usd_per_query=2e-4).target_usd == 2e-4
    for bad in (0.0, -1e-4, 2e-3, math.nan, math.inf):
        with pytest.raises(ConfigError, match="target_usd_per_query"):
            BudgetTier("low", 1e-3, target_usd_per_query=bad)
