"""Rewards as plain functions of (correctness, cost, budget): CORL's gate, Router-R1's grade,
and the neural router's cost-weighted gate.

``RewardFn`` turns a finished trajectory into a ``RewardBreakdown``; ``make_reward`` builds
one from a verifier and the choices; ``reward_from_config`` from a ``RewardConfig`` (every
trainer's config has one: ``reward_config``), the one factory PPO, GRPO and the warm start
share. The neural router's RL scores whole batches of simulated episodes, not trajectories:
its reward is ``cost_weighted_reward`` here, CORL's gate minus a calibrated cost term, which
its PPO, its behaviour cloning and its choice of teachers all call. Spend targets are not a
reward of their own: the trainers shape this reward with ``TierMultipliers``
(training/_lagrange.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier
from corl_graph.trajectories import Trajectory

from ._verifiers import Verifier, VerifierKind, make_verifier

__all__ = [
    "RewardBreakdown",
    "RewardConfig",
    "RewardFn",
    "RewardKind",
    "corl_reward",
    "cost_weighted_reward",
    "format_penalty",
    "graded_reward",
    "make_reward",
    "reward_from_config",
]

RewardKind = Literal["corl", "graded"]


def corl_reward(correct: float, cost_usd: float, budget_usd: float) -> float:
    """CORL: ``r = correct * 1[cost <= B_tier]``; over budget earns nothing.

    >>> corl_reward(1.0, 0.004, 0.01), corl_reward(1.0, 0.02, 0.01)
    (1.0, 0.0)
    """
    return float(correct) if cost_usd <= budget_usd else 0.0


def cost_weighted_reward(
    correct: np.ndarray,
    cost_usd: np.ndarray,
    budget_usd: np.ndarray | float,
    *,
    weight: np.ndarray | float,
    cost_ref_usd: float,
) -> np.ndarray:
    """The neural router's reward, per episode: ``corl_reward`` (``correct * 1[cost <= B]``)
    minus ``weight * cost / cost_ref_usd``, elementwise over arrays of episodes.

    The ledger (and the simulator's mask) never lets cost pass the cap, so the gate is 1 in
    practice; it stays so that a simulator bug would cost reward instead of teaching an
    overspend. The cost term separates operating points of equal accuracy and is what the
    per-tier weight calibrates (weight -> 0: the most accurate policy within the cap).

    >>> r = cost_weighted_reward(
    ...     np.array([1.0, 1.0]), np.array([0.001, 0.02]), 0.01, weight=0.5, cost_ref_usd=0.001
    ... )
    >>> r.tolist()  # within the cap: 1 - 0.5 * 1; over it: 0 - 0.5 * 20
    [0.5, -10.0]
    """
    within = cost_usd <= np.asarray(budget_usd) + 1e-12
    return np.asarray(correct * within - np.asarray(weight) * cost_usd / cost_ref_usd, float)


def graded_reward(
    correct: float, cost_usd: float, budget_usd: float, *, alpha: float = 0.3
) -> float:
    """Router-R1's graded variant: ``correct * (1 - a) + a * cost_score``.

    ``cost_score = 1 - cost / B_tier`` (clipped to [0, 1]): the share of the tier's budget
    left unspent, so the same dollar weighs more in a low tier than in a high one.

    >>> graded_reward(1.0, 0.0, 0.01, alpha=0.2), graded_reward(0.0, 0.005, 0.01, alpha=0.2)
    (1.0, 0.1)
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"graded_reward alpha must be in [0, 1], got {alpha}")
    if budget_usd > 0:
        cost_score = 1.0 - min(max(cost_usd / budget_usd, 0.0), 1.0)
    else:
        cost_score = 1.0 if cost_usd <= 0 else 0.0
    return float(correct) * (1.0 - alpha) + alpha * cost_score


def format_penalty(format_errors: int, *, per_error: float = 0.1, cap: float = 0.5) -> float:
    """A non-positive penalty for malformed controller turns (the graph fell back).

    >>> format_penalty(0), format_penalty(2), format_penalty(10)
    (0.0, -0.2, -0.5)
    """
    return 0.0 - min(per_error * max(format_errors, 0), cap)  # 0.0, not -0.0, without errors


@dataclass(frozen=True, slots=True)
class RewardBreakdown:
    """The scalar reward and what it was made of (logged per tier)."""

    reward: float
    correct: float
    cost_usd: float
    format_penalty: float
    within_budget: bool


RewardFn = Callable[[Trajectory, "str | None", BudgetTier], RewardBreakdown]


def make_reward(
    verifier: Verifier,
    *,
    kind: RewardKind = "corl",
    alpha: float = 0.3,
    per_format_error: float = 0.1,
    format_cap: float = 0.5,
) -> RewardFn:
    """A reward function: verify the answer against the reference, then gate or grade by
    cost, then add the format penalty.

    >>> from corl_graph.budget import BudgetTier
    >>> from corl_graph.training import exact_match
    >>> fn = make_reward(exact_match)
    >>> fn(Trajectory("q", "low", "t", "q1", answer="4"), "4.0", BudgetTier("low", 0.01)).reward
    1.0
    """
    if kind not in ("corl", "graded"):
        raise ConfigError(f"reward kind must be 'corl' or 'graded', got {kind!r}")

    def reward(trajectory: Trajectory, reference: str | None, tier: BudgetTier) -> RewardBreakdown:
        answer = trajectory.answer
        correct = verifier(answer, reference) if answer and reference is not None else 0.0
        budget = tier.max_usd_per_query
        if kind == "corl":
            base = corl_reward(correct, trajectory.cost_usd, budget)
        else:
            base = graded_reward(correct, trajectory.cost_usd, budget, alpha=alpha)
        penalty = format_penalty(
            len(trajectory.format_errors), per_error=per_format_error, cap=format_cap
        )
        return RewardBreakdown(
            base + penalty, correct, trajectory.cost_usd, penalty, trajectory.cost_usd <= budget
        )

    return reward


@dataclass(frozen=True, slots=True)
class RewardConfig:
    """The reward of a run, shared by every trainer's config: ``kind`` ("corl": correct *
    1[cost <= cap]; "graded": Router-R1's grade with weight ``alpha``), ``format_penalty``
    per malformed turn, and the answer ``verifier``. Validated here, once.

    >>> reward_from_config(RewardConfig(kind="graded", alpha=0.2)).__name__
    'reward'
    """

    kind: RewardKind = "corl"
    alpha: float = 0.3
    format_penalty: float = 0.1
    verifier: VerifierKind = "exact"

    def __post_init__(self) -> None:
        if self.kind not in ("corl", "graded"):
            raise ConfigError(f"reward must be 'corl' or 'graded', got {self.kind!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"reward_alpha must be in [0, 1], got {self.alpha}")
        if not self.format_penalty >= 0:
            raise ConfigError(f"format_penalty must be >= 0, got {self.format_penalty}")
        if self.verifier not in ("exact", "math"):
            raise ConfigError(f"verifier must be 'exact' or 'math', got {self.verifier!r}")


def reward_from_config(config: RewardConfig) -> RewardFn:
    """The reward function of ``config``: the one factory every trainer calls."""
    return make_reward(
        make_verifier(config.verifier),
        kind=config.kind,
        alpha=config.alpha,
        per_format_error=config.format_penalty,
    )
