"""Metrics of a routed run: accuracy, cost, expert-call ratio, cap violations, and AIQ.

Pure functions over plain numbers, so every figure can be checked by hand (see
tests/evaluation/test_metrics.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from corl_graph._exceptions import ConfigError

__all__ = ["QueryOutcome", "TierMetrics", "aiq", "summarize", "upper_hull"]

# Costs are float sums of prices; a run within a nano-dollar of its cap is inside it.
_CAP_EPS = 1e-12


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    """How one query went under one policy and tier.

    ``expert_calls`` counts calls that reached an expert (refused ones did not);
    ``escalated`` is True when at least one of them went to an expert other than the
    controller's own model: the event CORL's expert-call ratio counts.
    """

    query_id: str
    correct: float
    cost_usd: float
    expert_calls: int
    escalated: bool
    budget_exhausted: bool = False
    answer: str | None = None
    answer_source: str | None = None
    format_errors: int = 0  # malformed controller turns (the graph fell back)


@dataclass(frozen=True, slots=True)
class TierMetrics:
    """One policy on one tier.

    - ``accuracy``: mean correctness;
    - ``mean_cost_usd`` / ``p95_cost_usd``: per query (p95 by linear interpolation between
      order statistics, numpy's default);
    - ``expert_call_ratio``: share of queries with at least one call to an expert other than
      the controller model (CORL's measure; with no controller model, any call counts);
    - ``calls_per_query``: mean number of calls that reached an expert, the controller
      model's included;
    - ``cap_violations``: queries whose cost exceeded the tier's cap (must be 0);
    - ``format_error_rate``: share of queries with at least one malformed controller turn
      (the graph fell back to a safe action there).
    """

    policy: str
    tier: str
    cap_usd: float
    queries: int
    accuracy: float
    mean_cost_usd: float
    p95_cost_usd: float
    expert_call_ratio: float
    calls_per_query: float
    cap_violations: int
    budget_exhausted_share: float
    format_error_rate: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    outcomes: Sequence[QueryOutcome], *, policy: str, tier: str, cap_usd: float
) -> TierMetrics:
    """Aggregate per-query outcomes into a ``TierMetrics``."""
    if not outcomes:
        raise ConfigError(f"no outcomes to summarise for {policy!r} on tier {tier!r}")
    n = len(outcomes)
    costs = np.array([o.cost_usd for o in outcomes], dtype=np.float64)
    return TierMetrics(
        policy=policy,
        tier=tier,
        cap_usd=cap_usd,
        queries=n,
        accuracy=sum(o.correct for o in outcomes) / n,
        mean_cost_usd=float(costs.mean()),
        p95_cost_usd=float(np.percentile(costs, 95)),
        expert_call_ratio=sum(o.escalated for o in outcomes) / n,
        calls_per_query=sum(o.expert_calls for o in outcomes) / n,
        cap_violations=int((costs > cap_usd + _CAP_EPS).sum()),
        budget_exhausted_share=sum(o.budget_exhausted for o in outcomes) / n,
        format_error_rate=sum(o.format_errors > 0 for o in outcomes) / n,
    )


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def upper_hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-decreasing upper convex hull of (cost, accuracy) points, cheapest first.

    Only points that no cheaper point matches or beats survive (the Pareto front), then the
    upper hull of those: mixing two routers at random reaches any point on the segment
    between them, so the hull is what a deployer can buy.

    >>> upper_hull([(1, 0.5), (2, 0.4), (3, 0.9), (2, 0.6)])
    [(1, 0.5), (3, 0.9)]
    """
    front: list[tuple[float, float]] = []
    for p in sorted(set(points), key=lambda p: (p[0], -p[1])):
        if not front or p[1] > front[-1][1]:
            front.append(p)
    hull: list[tuple[float, float]] = []
    for p in front:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) >= 0:
            hull.pop()
        hull.append(p)
    return hull


def _hull_at(hull: Sequence[tuple[float, float]], x: float) -> float:
    """The hull's value at ``x`` >= its cheapest point: linear between points, flat after."""
    for (x0, y0), (x1, y1) in pairwise(hull):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return hull[-1][1]


def aiq(points: Sequence[tuple[float, float]], *, c_min: float, c_max: float) -> float:
    """RouterBench's average improvement in quality, normalised as in the data README.

    The area under the non-decreasing upper convex hull of ``points`` (cost, accuracy) over
    ``[c_min, c_max]`` (the single models' cost range), divided by ``c_max``. The hull is flat
    right of its priciest point (spending more can always be wasted) and zero left of its
    cheapest (the router offers nothing there).

    >>> round(aiq([(0.0, 0.5), (1.0, 1.0)], c_min=0.0, c_max=2.0), 4)
    0.875
    """
    if not points:
        raise ConfigError("aiq needs at least one (cost, accuracy) point")
    if not (math.isfinite(c_min) and math.isfinite(c_max)) or not 0 <= c_min < c_max:
        raise ConfigError(f"aiq needs 0 <= c_min < c_max, got {c_min!r}, {c_max!r}")
    hull = upper_hull(points)
    # The integrand is piecewise linear between the hull's points, and zero left of the
    # first one; with that point among the breakpoints no segment straddles the jump.
    xs = sorted({c_min, c_max, *(x for x, _ in hull if c_min < x < c_max)})
    area = 0.0
    for a, b in pairwise(xs):
        if a >= hull[0][0]:
            area += (b - a) * (_hull_at(hull, a) + _hull_at(hull, b)) / 2
    return area / c_max
