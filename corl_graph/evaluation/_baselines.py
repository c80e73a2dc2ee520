"""Baselines that need the table: the oracle, fitted kNN / threshold routers, matched random.

kNN and threshold routers are fitted on the train split and calibrated per tier on it
(leave-one-out neighbours): among the knob values that keep every query inside the cap, the
cheapest whose train accuracy is within ``tolerance`` of the best. The same rule calibrates
the neural policy (``corl_graph.training.neural_ppo.calibrate_tiers``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from corl_graph._exceptions import ConfigError
from corl_graph.experts import ExpertRequest, OutcomeTable, ReplayExpert
from corl_graph.policies import (
    Decision,
    KNNRouter,
    PolicyView,
    RandomRouter,
    Reserve,
    ThresholdRouter,
    affordable,
    last_reply,
)
from corl_graph.protocol import Answer, CallExpert

__all__ = [
    "OraclePolicy",
    "calibrate_knn",
    "calibrate_threshold",
    "fit_knn",
    "fit_threshold",
    "matched_random",
    "reserve_of",
]

KNN_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0)
SHARES = tuple(i / 10 for i in range(11))


def reserve_of(experts: Sequence[ReplayExpert]) -> Reserve:
    """What each call would reserve, asked of the experts themselves."""
    by_name = {e.name: e for e in experts}

    def reserve(view: PolicyView, name: str) -> float:
        return by_name[name].worst_case(ExpertRequest(view.query_id, view.query, view.query))[1]

    return reserve


class OraclePolicy:
    """The upper bound: call the cheapest expert that is correct on this query (it reads the
    recorded outcomes); when none is, the cheapest affordable one."""

    def __init__(self, table: OutcomeTable, experts: Sequence[ReplayExpert]):
        self.table = table
        self.experts = list(experts)
        self.reserve = reserve_of(experts)
        self.name = "oracle"

    async def decide(self, view: PolicyView) -> Decision:
        if view.calls or view.budget_exhausted:
            return last_reply(view)
        options = [e for e in self.experts if affordable(view, e.name, self.reserve)]
        if not options:
            return Decision(Answer(""))
        outcomes = {e.name: self.table.outcome(view.query_id, e.model) for e in options}
        right = [e for e in options if outcomes[e.name].correct >= 1.0]
        best = min(right or options, key=lambda e: outcomes[e.name].cost_usd)
        return Decision(CallExpert(best.name, view.query))


def _train(
    table: OutcomeTable, experts: Sequence[ReplayExpert], emb: dict[str, np.ndarray]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids = sorted(q for q, i in table.queries.items() if i.split == "train")
    index = np.stack([emb[q] for q in ids]).astype(np.float32)
    correct = np.array([[table.outcome(q, e.model).correct for e in experts] for q in ids])
    cost = np.array([[table.outcome(q, e.model).cost_usd for e in experts] for q in ids])
    worst = np.array([[e.worst_case(ExpertRequest(q, "", ""))[1] for e in experts] for q in ids])
    return ids, index, correct, cost, worst


def _pick(results: Sequence[tuple[float, float, float]], tolerance: float) -> float:
    """(knob, accuracy, cost) -> the cheapest knob within ``tolerance`` of the best accuracy."""
    best = max(acc for _, acc, _ in results)
    return min((cost, knob) for knob, acc, cost in results if acc >= best - tolerance)[1]


def fit_knn(
    table: OutcomeTable, experts: Sequence[ReplayExpert], emb: dict[str, np.ndarray], *, k: int = 20
) -> KNNRouter:
    _, index, correct, cost, _ = _train(table, experts, emb)
    return KNNRouter(
        index, correct, [e.name for e in experts], cost.mean(0), k=k, reserve=reserve_of(experts)
    )


def calibrate_knn(
    router: KNNRouter,
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    emb: dict[str, np.ndarray],
    cap: float,
    *,
    tolerance: float = 0.005,
) -> float:
    """The tier's cost weight for ``router`` (see the module docstring)."""
    _, index, correct, cost, worst = _train(table, experts, emb)
    allowed = worst <= cap
    rows = np.arange(len(index))
    results = []
    for w in KNN_WEIGHTS:
        choice = router.with_cost_weight(w).choose(index, allowed, exclude_self=True)
        results.append((w, correct[rows, choice].mean(), cost[rows, choice].mean()))
    return _pick(results, tolerance)


def strong_and_weak(table: OutcomeTable, experts: Sequence[ReplayExpert]) -> tuple[int, int]:
    """Strong: the best on train (ties: cheaper). Weak: the best of those costing at most a
    third of the strong one, RouteLLM's cheap-but-capable partner."""
    ids = [q for q, i in table.queries.items() if i.split == "train"]
    acc = [np.mean([table.outcome(q, e.model).correct for q in ids]) for e in experts]
    cost = [np.mean([table.outcome(q, e.model).cost_usd for q in ids]) for e in experts]
    strong = max(range(len(experts)), key=lambda i: (acc[i], -cost[i]))
    cheap = [i for i in range(len(experts)) if cost[i] <= cost[strong] / 3]
    if not cheap:
        raise ConfigError("no model costs a third of the strongest: no weak model to pair")
    weak = max(cheap, key=lambda i: (acc[i], -cost[i]))
    return strong, weak


def fit_threshold(
    table: OutcomeTable, experts: Sequence[ReplayExpert], emb: dict[str, np.ndarray], *, k: int = 20
) -> ThresholdRouter:
    _, index, correct, _, _ = _train(table, experts, emb)
    strong, weak = strong_and_weak(table, experts)
    gain = correct[:, strong] - correct[:, weak]
    return ThresholdRouter(
        index, gain, experts[weak].name, experts[strong].name, k=k, reserve=reserve_of(experts)
    )


def calibrate_threshold(
    router: ThresholdRouter,
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    emb: dict[str, np.ndarray],
    cap: float,
    *,
    tolerance: float = 0.005,
) -> float:
    """The tier's share of strong calls for ``router`` (see the module docstring)."""
    _, index, correct, cost, worst = _train(table, experts, emb)
    names = [e.name for e in experts]
    s, w = names.index(router.strong), names.index(router.weak)
    strong_ok = worst[:, s] <= cap
    results = []
    for share in SHARES:
        r = router.calibrate(share)
        go = (r.scores(index, exclude_self=True) > r.threshold) & strong_ok
        choice = np.where(go, s, w)
        rows = np.arange(len(index))
        results.append((share, correct[rows, choice].mean(), cost[rows, choice].mean()))
    return _pick(results, tolerance)


def matched_random(
    experts: Sequence[ReplayExpert], mean_cost: Sequence[float], target: float, *, seed: int = 0
) -> RandomRouter:
    """A random router over the two experts whose mean costs bracket ``target``, weighted so
    that its expected cost is ``target`` (the cheapest or priciest alone outside the range)."""
    order = sorted(range(len(experts)), key=lambda i: mean_cost[i])
    lo = max(
        (i for i in order if mean_cost[i] <= target), key=lambda i: mean_cost[i], default=order[0]
    )
    hi = min(
        (i for i in order if mean_cost[i] >= target), key=lambda i: mean_cost[i], default=order[-1]
    )
    if lo == hi or math.isclose(mean_cost[hi], mean_cost[lo]):
        return RandomRouter([experts[lo].name], [1.0], seed=seed)
    p_hi = (target - mean_cost[lo]) / (mean_cost[hi] - mean_cost[lo])
    router = RandomRouter([experts[lo].name, experts[hi].name], [1 - p_hi, p_hi], seed=seed)
    router.name = f"random(matched ${target:.2e})"
    return router
