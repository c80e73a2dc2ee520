"""Per-tier figures of a set of episodes, and the spend constraint's part in an iteration.

Shared by PPO (training/_trainer.py) and GRPO (training/_grpo.py), so both log the same
names: ``reward/<tier>``, ``correct/<tier>``, ``cost_usd/<tier>``, ``target_usd/<tier>``,
``expert_call_ratio/<tier>``, ``expert_calls/<tier>``, ``format_error_rate/<tier>`` and,
under ``cost_constraint="lagrange"``, ``lagrange/<tier>`` and ``reward/shaped_mean``.
Sums are reduced over ranks (a no-op in one process), so every rank logs, and steps its
multipliers on, the same global figures.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from corl_graph.budget import TierSet
from corl_graph.experts import Expert, ExpertRequest
from corl_graph.trajectories import Trajectory

from ._config import RLConfig
from ._fsdp import all_reduce_sum
from ._lagrange import TierMultipliers
from ._rollout import Episode, QuerySpec

__all__ = [
    "constraint_metrics",
    "episode_metrics",
    "multipliers_for",
    "reached_experts",
    "shaped_scores",
    "training_target",
    "unaffordable_tiers",
    "warn_unaffordable_tiers",
]

_FIELDS = (
    "reward",
    "correct",
    "cost_usd",
    "expert_call_ratio",
    "expert_calls",
    "format_error_rate",
)


def multipliers_for(config: RLConfig) -> TierMultipliers | None:
    """The run's per-tier Lagrange multipliers (None without ``cost_constraint="lagrange"``)."""
    if config.cost_constraint != "lagrange":
        return None
    return TierMultipliers.for_tiers(
        [t.name for t in config.tiers],
        lr=config.lagrange_lr,
        init=config.lagrange_init,
        max_lambda=config.lagrange_max,
    )


def training_target(tiers: TierSet, tier: str, margin: float = 0.0) -> float:
    """The target a tier is trained against: ``target * (1 - margin)`` (``target_margin``).

    >>> from corl_graph.budget import BudgetTier
    >>> ts = TierSet([BudgetTier("low", 1e-3, target_usd_per_query=1e-4)])
    >>> round(training_target(ts, "low", 0.1), 12)
    9e-05
    """
    return tiers[tier].target_usd * (1.0 - margin)


def shaped_scores(
    episodes: Sequence[Episode],
    tiers: TierSet,
    multipliers: TierMultipliers | None,
    *,
    margin: float = 0.0,
) -> list[float]:
    """The scalar each episode is trained on: its reward, minus ``lambda_tier * cost /
    target_tier`` under the spend constraint (the target tightened by ``margin``)."""
    if multipliers is None:
        return [e.reward.reward for e in episodes]
    return [
        multipliers.shaped(
            e.tier,
            reward=e.reward.reward,
            cost_usd=e.trajectory.cost_usd,
            target_usd=training_target(tiers, e.tier, margin),
        )
        for e in episodes
    ]


def constraint_metrics(
    metrics: dict[str, float],
    tiers: TierSet,
    multipliers: TierMultipliers | None,
    scores: Sequence[float],
    *,
    margin: float = 0.0,
) -> dict[str, float]:
    """``target_usd/<tier>`` always; with multipliers, one dual-ascent step on this
    iteration's ``cost_usd/<tier>`` (from ``episode_metrics``, already reduced over ranks)
    against the training target (``target * (1 - margin)``, logged as
    ``train_target_usd/<tier>`` when ``margin > 0``) and the new ``lagrange/<tier>``."""
    out = {f"target_usd/{name}": tier.target_usd for name, tier in tiers.items()}
    if multipliers is None:
        return out
    if margin > 0:
        out.update({f"train_target_usd/{t}": training_target(tiers, t, margin) for t in tiers})
    seen = {t: metrics[f"cost_usd/{t}"] for t in tiers if f"cost_usd/{t}" in metrics}
    multipliers.update(seen, {t: training_target(tiers, t, margin) for t in seen})
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


def unaffordable_tiers(
    experts: Sequence[Expert], tiers: TierSet, queries: Sequence[QuerySpec], *, sample: int = 64
) -> list[str]:
    """One message per tier whose cap is below every expert's worst-case reservation (on
    the first ``sample`` queries): the ledger refuses every call there, so the tier can
    only learn to answer alone. The message names the numbers and the fix."""
    if not experts or not queries:
        return []
    cheapest: tuple[float, str] | None = None
    for e in experts:
        usd = min(
            e.worst_case(ExpertRequest(q.query_id, q.text, q.text))[1] for q in queries[:sample]
        )
        if cheapest is None or usd < cheapest[0]:
            cheapest = (usd, e.name)
    usd, name = cheapest or (0.0, "")
    out = []
    for tier_name, tier in tiers.items():
        if tier.max_usd_per_query < usd:
            out.append(
                f"tier {tier_name!r}: cap ${tier.max_usd_per_query:g} is below every expert's "
                f"worst-case reservation (the least is {name!r} at ${usd:.3g} per call: input "
                "tokens + max_output_tokens at its price), so every call of this tier is "
                "refused; raise the cap or lower that expert's max_output_tokens"
            )
    return out


def warn_unaffordable_tiers(
    experts: Sequence[Expert], tiers: TierSet, queries: Sequence[QuerySpec]
) -> list[str]:
    """``unaffordable_tiers`` as ``UserWarning``s (the CLI prints them); returns them."""
    messages = unaffordable_tiers(experts, tiers, queries)
    for message in messages:
        warnings.warn(message, UserWarning, stacklevel=3)
    return messages
