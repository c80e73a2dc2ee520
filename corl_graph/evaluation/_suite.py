"""The replay benchmark: every baseline, the neural policy and any LLM controllers (a trained
checkpoint, its base, a vLLM endpoint) on one table, per tier.

Everything runs through the real graph (``Router``) with replayed experts on the test split.
Operating points for AIQ: each router family's per-tier points plus a sweep of its knob on
the largest tier (kNN: cost weight; threshold: share of strong calls; agreement cascade:
answers that must agree; neural: cost weight).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corl_graph.budget import TierSet
from corl_graph.evaluation._baselines import (
    OraclePolicy,
    calibrate_knn,
    calibrate_threshold,
    fit_knn,
    fit_threshold,
    matched_random,
)
from corl_graph.evaluation._controllers import ControllerSpec
from corl_graph.evaluation._harness import route_queries, test_queries
from corl_graph.evaluation._metrics import TierMetrics, aiq, summarize
from corl_graph.evaluation._pool import pareto_pool
from corl_graph.experts import OutcomeTable, ReplayExpert
from corl_graph.policies import AlwaysExpert, Cascade, ControllerOnly, NeuralPolicy, Policy

__all__ = ["BenchmarkResult", "run_benchmark", "write_plot"]

SWEEP_SHARES = (0.0, 0.3, 0.6, 1.0)
SWEEP_KNN = (0.0, 0.1, 0.35, 1.0, 5.0)
SWEEP_WEIGHTS = (0.001, 0.01, 0.1, 1.0, 3.0)
# Agreement cascade: 2 is the per-tier point (what a user would pick), 1 and 3 the sweep.
SWEEP_AGREE = (1, 3)


def agreement_cascade(
    table: OutcomeTable, experts: Sequence[ReplayExpert], agree: int = 2
) -> Cascade:
    """The fixed agreement cascade: the pool's train Pareto front (``pareto_pool``, at most
    six models) cheapest first, the controller included (it is the cheapest, so a cascade
    may stop at its reply), stopping once ``agree`` answers coincide, then the majority
    vote. A strong router that needs no training; where answers cannot be voted on (code) it
    calls every affordable model and answers with the last reply."""
    names = [e.name for e in pareto_pool(table, experts, 6)]
    return Cascade(names, agree=agree, name=f"cascade(agree={agree})")


@dataclass
class BenchmarkResult:
    """Rows are ``TierMetrics`` plus ``family`` and ``role`` ("tier": calibrated for that
    tier; "single": one model; "sweep": an AIQ operating point)."""

    table: str
    pool: list[str]
    controller: str
    tiers: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    aiq: dict[str, float] = field(default_factory=dict)
    cost_range: tuple[float, float] = (0.0, 0.0)
    seconds: float = 0.0

    def add(self, m: TierMetrics, family: str, role: str, knob: float | None = None) -> None:
        self.rows.append({**m.as_dict(), "family": family, "role": role, "knob": knob})

    def points(self, family: str) -> list[tuple[float, float]]:
        return [(r["mean_cost_usd"], r["accuracy"]) for r in self.rows if r["family"] == family]

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.__dict__, indent=1) + "\n")


async def _run(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    policy: Policy,
    tiers: TierSet,
    tier: str,
    emb: dict[str, np.ndarray],
    controller: str,
    ids: Sequence[str],
    concurrency: int,
) -> TierMetrics:
    outcomes = await route_queries(
        table,
        experts,
        policy,
        tiers,
        tier,
        query_ids=ids,
        features=emb,
        controller=controller,
        concurrency=concurrency,
    )
    return summarize(outcomes, policy=policy.name, tier=tier, cap_usd=tiers[tier].max_usd_per_query)


async def run_benchmark(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    tiers: TierSet,
    controller: str,
    embeddings: dict[str, np.ndarray],
    neural: NeuralPolicy | None,
    *,
    concurrency: int = 64,
    limit: int | None = None,
    sweeps: bool = True,
    controllers: Sequence[ControllerSpec] = (),
) -> BenchmarkResult:
    """Run the whole comparison on the test split of ``table``. Each of ``controllers``
    adds one row per tier (family ``llm:<label>``), routed ``spec.concurrency`` at a time;
    their ``aclose`` runs at the end, on this event loop."""
    try:
        return await _benchmark(
            table, experts, tiers, controller, embeddings, neural, concurrency, limit, sweeps,
            controllers,
        )  # fmt: skip
    finally:
        for spec in controllers:
            if spec.aclose is not None:
                await spec.aclose()


async def _benchmark(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    tiers: TierSet,
    controller: str,
    embeddings: dict[str, np.ndarray],
    neural: NeuralPolicy | None,
    concurrency: int,
    limit: int | None,
    sweeps: bool,
    controllers: Sequence[ControllerSpec],
) -> BenchmarkResult:
    started = time.perf_counter()
    ids = test_queries(table)[:limit]
    top = list(tiers)[-1]
    res = BenchmarkResult(
        table.name,
        [e.name for e in experts],
        controller,
        {t: tiers[t].max_usd_per_query for t in tiers},
    )

    async def run(policy: Policy, tier: str, conc: int | None = None) -> TierMetrics:
        return await _run(
            table, experts, policy, tiers, tier, embeddings, controller, ids, conc or concurrency
        )

    for e in experts:  # single models: tier-independent, run where every call fits
        res.add(await run(AlwaysExpert([e.name]), top), "single", "single")
    single_costs = [r["mean_cost_usd"] for r in res.rows]
    res.cost_range = (min(single_costs), max(single_costs))
    knn = fit_knn(table, experts, embeddings)
    thr = fit_threshold(table, experts, embeddings)
    for tier in tiers:
        cap = tiers[tier].max_usd_per_query
        res.add(await run(ControllerOnly(controller), tier), "controller-only", "tier")
        res.add(await run(OraclePolicy(table, experts), tier), "oracle", "tier")
        w = calibrate_knn(knn, table, experts, embeddings, cap)
        res.add(await run(knn.with_cost_weight(w), tier), "knn", "tier", w)
        share = calibrate_threshold(thr, table, experts, embeddings, cap)
        res.add(await run(thr.calibrate(share), tier), "threshold", "tier", share)
        res.add(await run(agreement_cascade(table, experts), tier), "cascade", "tier", 2)
        if neural is not None:
            m = await run(neural, tier)
            res.add(m, "neural", "tier", neural.meta.tier_cost_weight.get(tier))
            rnd = matched_random(experts, single_costs, m.mean_cost_usd)
            res.add(await run(rnd, tier), "random", "tier")
        for spec in controllers:
            res.add(await run(spec.policy, tier, spec.concurrency), spec.family, "tier")
    if sweeps:
        await _sweeps(res, run, knn, thr, neural, top)
        for agree in SWEEP_AGREE:
            cascade = agreement_cascade(table, experts, agree)
            res.add(await run(cascade, top), "cascade", "sweep", agree)
    llm = [spec.family for spec in controllers]
    for family in ("single", "knn", "threshold", "cascade", "neural", "oracle", "random", *llm):
        if res.points(family):
            res.aiq[family] = aiq(
                res.points(family), c_min=res.cost_range[0], c_max=res.cost_range[1]
            )
    res.seconds = time.perf_counter() - started
    return res


async def _sweeps(
    res: BenchmarkResult, run: Any, knn: Any, thr: Any, neural: NeuralPolicy | None, top: str
) -> None:
    for w in SWEEP_KNN:
        res.add(await run(knn.with_cost_weight(w), top), "knn", "sweep", w)
    for share in SWEEP_SHARES:
        res.add(await run(thr.calibrate(share), top), "threshold", "sweep", share)
    if neural is not None:
        for w in SWEEP_WEIGHTS:
            policy = NeuralPolicy(neural.params, neural.meta, cost_weight=w)
            res.add(await run(policy, top), "neural", "sweep", w)


_STYLE = {
    "single": ("o", "grey"),
    "controller-only": ("s", "black"),
    "oracle": ("*", "gold"),
    "knn": ("^", "tab:blue"),
    "threshold": ("v", "tab:green"),
    "cascade": ("P", "tab:orange"),
    "random": ("x", "tab:purple"),
    "neural": ("D", "tab:red"),
}

# LLM controllers (trained checkpoints, their bases, endpoints), in the order of their labels
_LLM_STYLE = (
    ("p", "tab:brown"),
    ("h", "tab:pink"),
    ("X", "tab:cyan"),
    ("d", "tab:olive"),
    ("8", "navy"),
)


def write_plot(res: BenchmarkResult, path: str | Path) -> None:
    """Cost (log scale) vs accuracy, every policy on one chart; tier points labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    styles = dict(_STYLE)
    llm = sorted({r["family"] for r in res.rows if r["family"].startswith("llm:")})
    for i, family in enumerate(llm):
        styles[family] = _LLM_STYLE[i % len(_LLM_STYLE)]
    for family, (marker, color) in styles.items():
        rows = sorted(
            (r for r in res.rows if r["family"] == family), key=lambda r: r["mean_cost_usd"]
        )
        if not rows:
            continue
        label = f"{family} (AIQ {res.aiq[family]:.3f})" if family in res.aiq else family
        xs = [r["mean_cost_usd"] for r in rows]
        ys = [r["accuracy"] for r in rows]
        ax.scatter(xs, ys, marker=marker, color=color, label=label, zorder=3)
        if family in llm:  # an LLM controller's tiers, joined cheapest first
            ax.plot(xs, ys, color=color, alpha=0.5, linestyle="--")
        if family in ("knn", "threshold", "cascade", "neural"):
            sweep = [r for r in rows if r["role"] == "sweep"]
            ax.plot(
                [r["mean_cost_usd"] for r in sweep],
                [r["accuracy"] for r in sweep],
                color=color,
                alpha=0.5,
            )
        for r in rows:
            if r["role"] == "tier" and family in ("neural", "knn", "threshold", "cascade", *llm):
                ax.annotate(
                    r["tier"],
                    (r["mean_cost_usd"], r["accuracy"]),
                    fontsize=7,
                    color=color,
                    xytext=(3, -8),
                    textcoords="offset points",
                )
            if r["role"] == "single":
                ax.annotate(
                    r["policy"].removeprefix("always(").removesuffix(")")[-18:],
                    (r["mean_cost_usd"], r["accuracy"]),
                    fontsize=6,
                    color="grey",
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (USD, log scale)")
    ax.set_ylabel("accuracy (test split)")
    ax.set_title(f"{res.table}: replayed routing, tiers {res.tiers}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
