"""Rewards and verifiers."""

from __future__ import annotations

import pytest
from corl_graph.training import (
    corl_reward,
    exact_match,
    format_penalty,
    graded_reward,
    make_reward,
    make_verifier,
    math_match,
)

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier
from corl_graph.trajectories import Trajectory


def test_corl_reward_gates_on_the_tier_budget() -> None:
    assert corl_reward(1.0, 0.01, 0.01) == 1.0
    assert corl_reward(1.0, 0.0100001, 0.01) == 0.0
    assert corl_reward(0.0, 0.0, 0.01) == 0.0


def test_graded_reward_weighs_cost_relative_to_the_tier() -> None:
    assert graded_reward(1.0, 0.0, 0.01, alpha=0.5) == 1.0
    assert graded_reward(1.0, 0.005, 0.01, alpha=0.5) == pytest.approx(0.75)
    assert graded_reward(1.0, 0.02, 0.01, alpha=0.5) == pytest.approx(0.5)  # over budget: 0 score
    assert graded_reward(0.0, 0.0, 0.0, alpha=0.5) == 0.5
    with pytest.raises(ConfigError, match="alpha"):
        graded_reward(1.0, 0.0, 0.01, alpha=2.0)


def test_format_penalty_is_capped() -> None:
    assert format_penalty(3, per_error=0.1) == pytest.approx(-0.3)
    assert format_penalty(100, per_error=0.1, cap=0.5) == -0.5


def test_verifiers() -> None:
    assert exact_match("<answer>$1,200</answer>", "1200") == 1.0
    assert exact_match("12", "1200") == 0.0
    assert math_match("\\frac{3}{4}", "0.75") == 1.0
    assert math_match("\\sqrt{8}", "2\\sqrt{2}") == 1.0
    assert math_match("7", "8") == 0.0
    assert make_verifier(lambda a, r: 0.5)("x", "y") == 0.5
    with pytest.raises(ConfigError, match="exact"):
        make_verifier("fuzzy")  # type: ignore[arg-type]


def test_make_reward_combines_verifier_budget_and_format() -> None:
    tier = BudgetTier("low", 0.001)
    fn = make_reward(exact_match, kind="corl", per_format_error=0.1)
    ok = Trajectory("q", "low", "t", "1", answer="4", cost_usd=0.0005, format_errors=["bad"])
    r = fn(ok, "4", tier)
    assert (r.reward, r.correct, r.within_budget) == (pytest.approx(0.9), 1.0, True)
    over = Trajectory("q", "low", "t", "1", answer="4", cost_usd=0.002)
    assert fn(over, "4", tier).reward == 0.0
    assert fn(Trajectory("q", "low", "t", "1"), "4", tier).reward == 0.0  # no answer
    graded = make_reward(exact_match, kind="graded", alpha=0.2)
    assert graded(ok, "4", tier).reward == pytest.approx(0.8 + 0.2 * 0.5 - 0.1)
    with pytest.raises(ConfigError):
        make_reward(exact_match, kind="nope")  # type: ignore[arg-type]
