"""Pool, controller and tiers for any table in the canonical format, with no preset needed.

- pool: every model of the table unless restricted (``--pool a,b,c``);
- controller: the cheapest model of the pool by mean recorded cost on train, unless named;
- tiers: given as ``low=CAP[:TARGET],medium=...,high=...`` (dollars per query; the target
  is the mean spend the tier should average), or derived from the single models' costs.

The derivation rule (``derive_tiers``), on the train split: ``c_min`` / ``c_max`` are the
cheapest and priciest single model's mean cost per query, ``mid = sqrt(c_min * c_max)`` the
middle of that range on a log scale, and ``reserve(m)`` the largest worst-case reservation of
one call of model ``m`` over the train queries (what the ledger holds before the call).

- low: affords every model whose mean cost is at most ``mid`` (the two cheapest when fewer
  qualify): cap = the largest of their reservations; when that admits a model costing more
  than ``mid`` on average, the mean-spend target is ``mid``;
- medium: one call of any model: cap = the largest reservation of the pool; target
  ``sqrt(mid * c_max)`` (three quarters up the log cost range);
- high: two calls of any model (room to verify): cap = twice the largest reservation.

Caps are rounded up to two significant digits. A tier's cap never admits less than the
controller's own call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier, TierSet
from corl_graph.evaluation._presets import PRESETS, preset_experts
from corl_graph.experts import ExpertRequest, OutcomeTable, ReplayExpert

__all__ = ["PoolSetup", "derive_tiers", "parse_tiers", "resolve_pool"]


@dataclass(frozen=True)
class PoolSetup:
    """What a run on a table uses: experts (cheapest first), controller model, tiers."""

    experts: list[ReplayExpert]
    controller: str
    tiers: TierSet
    derived_tiers: bool

    @property
    def pool(self) -> list[str]:
        return [e.name for e in self.experts]


def _round_up(x: float) -> float:
    if x <= 0:
        return x
    digits = 1 - math.floor(math.log10(x))
    factor = 10.0**digits
    return math.ceil(x * factor - 1e-9) / factor


def train_ids(table: OutcomeTable) -> list[str]:
    ids = sorted(q for q, info in table.queries.items() if info.split == "train")
    if not ids:
        raise ConfigError(f"table {table.name!r} has no train queries")
    return ids


def mean_costs(table: OutcomeTable, experts: Sequence[ReplayExpert]) -> np.ndarray:
    """Mean recorded cost per query of each expert on the train split: (K,)."""
    ids = train_ids(table)
    return np.array([np.mean([table.outcome(q, e.model).cost_usd for q in ids]) for e in experts])


def reservations(table: OutcomeTable, experts: Sequence[ReplayExpert]) -> np.ndarray:
    """The largest worst-case reservation of one call per expert over train queries: (K,)."""
    ids = train_ids(table)
    return np.array([max(e.worst_case(ExpertRequest(q, "", ""))[1] for q in ids) for e in experts])


def derive_tiers(
    table: OutcomeTable, experts: Sequence[ReplayExpert], controller: str | None = None
) -> TierSet:
    """Tiers from the single models' costs (the rule is in the module docstring)."""
    if not experts:
        raise ConfigError("deriving tiers needs at least one expert")
    mean = mean_costs(table, experts)
    res = reservations(table, experts)
    c_min, c_max = float(mean.min()), float(mean.max())
    if c_max <= 0:
        raise ConfigError(f"table {table.name!r}: every model's recorded cost is 0")
    mid = math.sqrt(max(c_min, c_max * 1e-6) * c_max)
    order = np.argsort(mean, kind="stable")
    low = [int(i) for i in order if mean[i] <= mid]
    if len(low) < 2:
        low = [int(i) for i in order[:2]]
    names = [e.name for e in experts]
    floor = float(res[names.index(controller)]) if controller in names else 0.0
    low_cap = _round_up(max(float(res[low].max()), floor))
    low_target = mid if any(mean[i] > mid for i in low) else None
    top = _round_up(float(res.max()))
    tiers = [
        BudgetTier("low", low_cap, target_usd_per_query=_target(low_target, low_cap)),
        BudgetTier("medium", max(top, low_cap), target_usd_per_query=_target(
            math.sqrt(mid * c_max), max(top, low_cap))),
        BudgetTier("high", _round_up(2 * max(top, low_cap))),
    ]  # fmt: skip
    return TierSet(tiers)


def _target(target: float | None, cap: float) -> float | None:
    if target is None or target >= cap:
        return None
    return float(f"{target:.2g}")


def parse_tiers(spec: str) -> TierSet:
    """``low=0.001:0.0004,medium=0.01,high=0.05`` -> tiers (cap, optional mean target)."""
    tiers = []
    for part in spec.split(","):
        name, sep, value = part.strip().partition("=")
        cap, _, target = value.partition(":")
        try:
            if not (sep and name):
                raise ValueError(f"{part!r} is not NAME=CAP[:TARGET]")
            tiers.append(
                BudgetTier(
                    name.strip(), float(cap), target_usd_per_query=float(target) if target else None
                )
            )
        except ValueError as exc:
            raise ConfigError(
                f"tiers must look like low=0.001:0.0004,medium=0.01,high=0.05 "
                f"(NAME=CAP[:TARGET] in dollars per query): {exc}"
            ) from exc
    if not tiers:
        raise ConfigError("no tiers given")
    return TierSet(tiers)


def resolve_pool(
    table: OutcomeTable,
    *,
    pool: Sequence[str] | None = None,
    controller: str | None = None,
    tiers: TierSet | str | None = None,
    preset: bool = False,
    max_output_tokens: int | None = None,
) -> PoolSetup:
    """The pool, controller and tiers of a run on ``table`` (see the module docstring).
    ``preset=True`` starts from the table's preset (``PRESETS``); explicit values win."""
    chosen = PRESETS.get(table.name) if preset else None
    if preset and chosen is None:
        raise ConfigError(f"no preset for table {table.name!r}; presets: {', '.join(PRESETS)}")
    if chosen is not None and pool is None:
        experts = preset_experts(table, chosen)
        controller = controller or chosen.controller
        if tiers is None:
            tiers = chosen.tiers()
    else:
        models = list(pool) if pool is not None else table.models
        unknown = [m for m in models if m not in table.prices]
        if unknown or not models:
            raise ConfigError(
                f"--pool: model(s) {unknown or models} not in table {table.name!r}; "
                f"models: {', '.join(table.models)}"
            )
        limit = max_output_tokens or (chosen.max_output_tokens if chosen else None)
        experts = [
            ReplayExpert(table, m)
            if limit is None
            else ReplayExpert(table, m, max_output_tokens=limit)
            for m in dict.fromkeys(models)
        ]
        costs = mean_costs(table, experts)
        order = np.argsort(costs, kind="stable")
        experts = [experts[i] for i in order]
    names = [e.name for e in experts]
    if controller is None:
        controller = names[int(np.argmin(mean_costs(table, experts)))]
    elif controller not in names:
        raise ConfigError(f"--controller {controller!r} is not in the pool: {', '.join(names)}")
    derived = tiers is None
    if isinstance(tiers, str):
        tiers = parse_tiers(tiers)
    if tiers is None:
        tiers = derive_tiers(table, experts, controller)
    return PoolSetup(experts, controller, tiers, derived)


def pareto_pool(
    table: OutcomeTable, experts: Sequence[ReplayExpert], size: int = 12
) -> list[ReplayExpert]:
    """At most ``size`` experts: the train split's cost/accuracy Pareto front (no cheaper
    model is at least as accurate), then the next fronts, cheapest first. A 41-model pool
    holds many models that some cheaper one beats; no router should need them."""
    if size < 1:
        raise ConfigError(f"pareto_pool size must be >= 1, got {size}")
    ids = train_ids(table)
    acc = np.array([np.mean([table.outcome(q, e.model).correct for q in ids]) for e in experts])
    cost = mean_costs(table, experts)
    left = list(range(len(experts)))
    chosen: list[int] = []
    while left and len(chosen) < size:
        front = [i for i in left if not any(_dominates(j, i, cost, acc) for j in left)]
        front.sort(key=lambda i: -acc[i])  # the most accurate of a front first, if it is cut
        chosen += front[: size - len(chosen)]
        left = [i for i in left if i not in front]
    return [experts[i] for i in sorted(chosen, key=lambda i: (cost[i], i))]


def _dominates(j: int, i: int, cost: np.ndarray, acc: np.ndarray) -> bool:
    """Model j is at most as costly and at least as accurate as model i, and better in one."""
    no_worse = cost[j] <= cost[i] and acc[j] >= acc[i]
    return bool(no_worse and (cost[j] < cost[i] or acc[j] > acc[i]))
