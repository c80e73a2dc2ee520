"""Per-tier spend targets as constraints: PPO-Lagrangian's multipliers, updated by dual ascent.

Training maximises ``E[reward]`` subject to ``E[cost | tier] <= target_tier`` for every tier
(a constrained MDP). The Lagrangian relaxation gives each tier a multiplier ``lambda_t >= 0``
and a shaped reward

    r_t = reward - lambda_t * cost / target_t

(cost in units of the tier's target, so one multiplier scale fits tiers whose targets differ
by orders of magnitude). After every iteration the multipliers follow the constraint's
violation measured on that iteration's episodes (projected dual ascent):

    lambda_t <- clip(lambda_t + lr * (mean_cost_t / target_t - 1), 0, max_lambda)

A tier that overspends its target gets a larger multiplier (spending costs more reward), one
that underspends sees its multiplier shrink towards 0 (the constraint is slack). Pure Python:
the LLM controller's PPO and GRPO and the neural router's RL share it, and the update is
tested on hand-computed numbers (tests/training/test_lagrange.py).

>>> m = TierMultipliers.for_tiers(["low", "high"], lr=0.5, init=0.0)
>>> m.update({"low": 2e-3, "high": 1e-3}, {"low": 1e-3, "high": 2e-3})
{'low': 0.5, 'high': 0.0}
>>> round(m.shaped("low", reward=1.0, cost_usd=2e-3, target_usd=1e-3), 6)
0.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from corl_graph._exceptions import ConfigError

__all__ = ["TierMultipliers", "dual_ascent", "lagrangian_reward", "target_penalty"]

# A tier whose target is 0 (nothing may be spent on average) keeps a finite cost scale.
_MIN_TARGET = 1e-12


def dual_ascent(
    lam: float, mean_cost_usd: float, target_usd: float, *, lr: float, max_lambda: float
) -> float:
    """One projected dual-ascent step for one tier's multiplier.

    >>> dual_ascent(0.2, mean_cost_usd=3e-3, target_usd=1e-3, lr=0.1, max_lambda=10.0)
    0.4
    >>> dual_ascent(0.05, mean_cost_usd=0.0, target_usd=1e-3, lr=0.1, max_lambda=10.0)
    0.0
    """
    if not (math.isfinite(mean_cost_usd) and mean_cost_usd >= 0):
        raise ConfigError(f"dual_ascent: mean cost must be finite and >= 0, got {mean_cost_usd}")
    violation = mean_cost_usd / max(target_usd, _MIN_TARGET) - 1.0
    return round(min(max(lam + lr * violation, 0.0), max_lambda), 12)


def lagrangian_reward(reward: float, cost_usd: float, target_usd: float, lam: float) -> float:
    """``reward - lam * cost / target``: the reward PPO-Lagrangian maximises for a tier.

    >>> lagrangian_reward(1.0, cost_usd=5e-4, target_usd=1e-3, lam=0.4)
    0.8
    """
    return reward - lam * cost_usd / max(target_usd, _MIN_TARGET)


def target_penalty(mean_cost_usd: float, target_usd: float) -> float:
    """How far a tier's mean spend exceeds its target, in targets: ``max(0, cost/target - 1)``.

    The evaluation score of a tier is ``accuracy - target_penalty(...)`` (the same for a
    warm start and a trained policy, so the two can be compared).

    >>> target_penalty(1.5e-3, 1e-3), target_penalty(5e-4, 1e-3)
    (0.5, 0.0)
    """
    return max(0.0, mean_cost_usd / max(target_usd, _MIN_TARGET) - 1.0)


@dataclass
class TierMultipliers:
    """One Lagrange multiplier per tier, with the dual-ascent step size and bound.

    ``state_dict()`` / ``load_state_dict()`` round-trip through JSON, so a checkpoint carries
    the multipliers and a resumed run continues from them.
    """

    values: dict[str, float]
    lr: float = 0.05
    max_lambda: float = 10.0
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"Lagrange multiplier lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.max_lambda) and self.max_lambda > 0):
            raise ConfigError(f"max_lambda must be a finite number > 0, got {self.max_lambda}")
        for tier, value in self.values.items():
            if not (math.isfinite(value) and 0 <= value <= self.max_lambda):
                raise ConfigError(
                    f"multiplier of tier {tier!r} must be in [0, max_lambda={self.max_lambda}], "
                    f"got {value}"
                )

    @classmethod
    def for_tiers(
        cls, tiers: Iterable[str], *, lr: float = 0.05, init: float = 0.0, max_lambda: float = 10.0
    ) -> TierMultipliers:
        return cls({t: float(init) for t in tiers}, lr=lr, max_lambda=max_lambda)

    def __getitem__(self, tier: str) -> float:
        return self.values[tier]

    def shaped(self, tier: str, *, reward: float, cost_usd: float, target_usd: float) -> float:
        """The tier's Lagrangian reward for one episode."""
        return lagrangian_reward(reward, cost_usd, target_usd, self.values[tier])

    def update(
        self, mean_cost_usd: Mapping[str, float], target_usd: Mapping[str, float]
    ) -> dict[str, float]:
        """One dual-ascent step for every tier seen this iteration (tiers without episodes
        keep their multiplier). Returns the new values."""
        for tier, cost in mean_cost_usd.items():
            if tier not in self.values:
                raise ConfigError(f"no multiplier for tier {tier!r}; tiers: {list(self.values)}")
            self.values[tier] = dual_ascent(
                self.values[tier], cost, target_usd[tier], lr=self.lr, max_lambda=self.max_lambda
            )
        self.history.append(dict(self.values))
        return dict(self.values)

    def metrics(self) -> dict[str, float]:
        """``lagrange/<tier>`` for the metrics log."""
        return {f"lagrange/{t}": v for t, v in self.values.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"values": dict(self.values), "lr": self.lr, "max_lambda": self.max_lambda}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> TierMultipliers:
        try:
            return cls(
                {str(k): float(v) for k, v in state["values"].items()},
                lr=float(state["lr"]),
                max_lambda=float(state["max_lambda"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ConfigError(f"not a TierMultipliers state: {exc!r}") from exc
