"""Per-tier figures of a set of episodes, and the spend constraint's part in an iteration.

Shared by PPO (training/_trainer.py) and GRPO (training/_grpo.py), so both log the same
names: ``reward/<tier>``, ``correct/<tier>``, ``cost_usd/<tier>``, ``target_usd/<tier>``,
``expert_call_ratio/<tier>``, ``expert_calls/<tier>``, ``format_error_rate/<tier>`` and,
under ``cost_constraint="lagrange"``, ``lagrange/<tier>`` and ``reward/shaped_mean``.
Sums are reduced over ranks (a no-op in one process), so every rank logs, and steps its
multipliers on, the same global figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from corl_graph.training._config import PPOConfig
from corl_graph.training._fsdp import all_reduce_sum
from corl_graph.training._lagrange import TierMultipliers
from corl_graph.training._rollout import Episode

from corl_graph.budget import TierSet
from corl_graph.trajectories import Trajectory

__all__ = [
    "constraint_metrics",
    "episode_metrics",
    "multipliers_for",
    "reached_experts",
    "shaped_scores",
]

_FIELDS = (
    "reward",
    "correct",
    "cost_usd",
    "expert_call_ratio",
    "expert_calls",
    "format_error_rate",
)


def multipliers_for(config: PPOConfig) -> TierMultipliers | None:
    """The run's per-tier Lagrange multipliers (None without ``cost_constraint="lagrange"``)."""
    if config.cost_constraint != "lagrange":
        return None
    return TierMultipliers.for_tiers(
        [t.name for t in config.tiers],
        lr=config.lagrange_lr,
        init=config.lagrange_init,
        max_lambda=config.lagrange_max,
    )


def shaped_scores(
    episodes: Sequence[Episode], tiers: TierSet, multipliers: TierMultipliers | None
) -> list[float]:
    """The scalar each episode is trained on: its reward, minus ``lambda_tier * cost /
    target_tier`` under the spend constraint."""
    if multipliers is None:
        return [e.reward.reward for e in episodes]
    return [
        multipliers.shaped(
            e.tier,
            reward=e.reward.reward,
            cost_usd=e.trajectory.cost_usd,
            target_usd=tiers[e.tier].target_usd,
        )
        for e in episodes
    ]


def constraint_metrics(
    metrics: dict[str, float],
    tiers: TierSet,
    multipliers: TierMultipliers | None,
    scores: Sequence[float],
) -> dict[str, float]:
    """``target_usd/<tier>`` always; with multipliers, one dual-ascent step on this
    iteration's ``cost_usd/<tier>`` (from ``episode_metrics``, already reduced over ranks)
    and the new ``lagrange/<tier>``."""
    out = {f"target_usd/{name}": tier.target_usd for name, tier in tiers.items()}
    if multipliers is None:
        return out
    seen = {t: metrics[f"cost_usd/{t}"] for t in tiers if f"cost_usd/{t}" in metrics}
    multipliers.update(seen, {t: tiers[t].target_usd for t in seen})
    out.update(multipliers.metrics())
    local = torch.tensor([float(sum(scores)), float(len(scores))], dtype=torch.float64)
    total = all_reduce_sum(local)
    out["reward/shaped_mean"] = float(total[0]) / max(float(total[1]), 1.0)
    return out


def reached_experts(trajectory: Trajectory, controller: str | None = None) -> list[str]:
    """The experts a run's calls reached (refused calls did not), leaving out
    ``controller``, the controller's own model: counted as ``corl-graph eval`` counts."""
    return [c.expert for c in trajectory.calls if c.status != "denied" and c.expert != controller]


def episode_metrics(
    episodes: Sequence[Episode], tiers: list[str], controller: str | None = None
) -> dict[str, float]:
    """Per-tier reward, correctness, cost, expert calls and format errors, summed over ranks.

    ``expert_call_ratio/<tier>``: share of episodes in which at least one call reached an
    expert other than ``controller`` (CORL's measure); ``expert_calls/<tier>``: mean such
    calls per episode; ``format_error_rate/<tier>``: share of episodes with at least one
    malformed controller turn (the graph fell back).
    """
    sums = torch.zeros(len(tiers), 1 + len(_FIELDS), dtype=torch.float64)
    for e in episodes:
        t = e.trajectory
        reached = reached_experts(t, controller)
        row = [
            1.0,
            e.reward.reward,
            e.reward.correct,
            t.cost_usd,
            float(bool(reached)),
            float(len(reached)),
            float(bool(t.format_errors)),
        ]
        sums[tiers.index(e.tier)] += torch.tensor(row, dtype=torch.float64)
    sums = all_reduce_sum(sums)
    out: dict[str, float] = {}
    for i, tier in enumerate(tiers):
        n = float(sums[i, 0])
        if n == 0:
            continue
        for j, name in enumerate(_FIELDS, start=1):
            out[f"{name}/{tier}"] = float(sums[i, j]) / n
    total = float(sums[:, 0].sum())
    out["reward/mean"] = float(sums[:, 1].sum()) / max(total, 1.0)
    out["episodes"] = total
    return out
