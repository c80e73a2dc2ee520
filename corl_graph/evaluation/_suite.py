"""The replay benchmark: every baseline, the neural router and any LLM controllers (a trained
checkpoint, its base, a vLLM endpoint) on one table, per tier.

Per-tier rows run through the real graph (``Router``) with replayed experts on the test
split, except those of the one-call predictor routers (kNN, MLP, matrix factorisation),
which are simulated like the single models and every sweep point: the same decisions on the
recorded numbers (``ReplaySim``'s arrays; tests/evaluation/test_learned_router.py checks them
against the graph), so a 41-model pool and 24-point sweeps take seconds, not hours.
Operating points for AIQ: each family's per-tier points plus a sweep of its knob on the
largest tier (kNN / MLP / MF / oracle: 24 cost weights; threshold: share of strong calls;
agreement cascade: answers that must agree; neural: the router's own sweep points).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corl_graph._exceptions import ConfigError
from corl_graph.budget import TierSet
from corl_graph.evaluation._baselines import (
    OraclePolicy,
    calibrate_threshold,
    fit_threshold,
    matched_random,
)
from corl_graph.evaluation._controllers import ControllerSpec
from corl_graph.evaluation._harness import route_queries, test_queries
from corl_graph.evaluation._metrics import TierMetrics, aiq, summarize
from corl_graph.evaluation._pool import pareto_pool
from corl_graph.evaluation._predictors import (
    LAMBDAS,
    calibrate_weight,
    choose_knn,
    fit_mf,
    fit_mlp,
    folds_of,
    one_call,
    out_of_fold,
)
from corl_graph.evaluation._router_fit import judged, router_outcomes
from corl_graph.evaluation._sim import EpisodeArrays, episode_arrays
from corl_graph.experts import OutcomeTable, ReplayExpert
from corl_graph.policies import (
    Cascade,
    CascadeRouter,
    ControllerOnly,
    KNNPredictor,
    NeuralPolicy,
    Policy,
)

__all__ = ["BenchmarkResult", "run_benchmark", "write_plot"]

SWEEP_SHARES = (0.0, 0.3, 0.6, 1.0)
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
    """Rows are ``TierMetrics`` plus ``family``, ``role`` ("tier": calibrated for that tier;
    "single": one model; "sweep": an AIQ operating point), ``knob`` and ``via`` ("graph":
    routed through the real graph; "sim": the same decisions replayed in ``ReplaySim``'s
    arrays, used for the single models and the sweeps, tested equal to the graph)."""

    table: str
    pool: list[str]
    controller: str
    tiers: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    aiq: dict[str, float] = field(default_factory=dict)
    cost_range: tuple[float, float] = (0.0, 0.0)
    seconds: float = 0.0
    gap_closed: float | None = None
    routing_vs_2models: dict[str, dict[str, float]] = field(default_factory=dict)
    targets: dict[str, float | None] = field(default_factory=dict)
    fitted: dict[str, Any] = field(default_factory=dict)

    def add(
        self, m: TierMetrics, family: str, role: str, knob: float | None = None, via: str = "graph"
    ) -> None:
        self.rows.append({**m.as_dict(), "family": family, "role": role, "knob": knob, "via": via})

    def points(self, family: str) -> list[tuple[float, float]]:
        return [(r["mean_cost_usd"], r["accuracy"]) for r in self.rows if r["family"] == family]

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.__dict__, indent=1, default=float) + "\n")


def sim_metrics(
    policy: str, tier: str, cap: float, correct: np.ndarray, cost: np.ndarray,
    calls: np.ndarray, escalated: np.ndarray,
) -> TierMetrics:  # fmt: skip
    """``TierMetrics`` of N simulated queries (the same definitions as ``summarize``)."""
    n = len(correct)
    return TierMetrics(
        policy=policy,
        tier=tier,
        cap_usd=cap,
        queries=n,
        accuracy=float(correct.mean()),
        mean_cost_usd=float(cost.mean()),
        p95_cost_usd=float(np.percentile(cost, 95)),
        expert_call_ratio=float(escalated.mean()),
        calls_per_query=float(calls.mean()),
        cap_violations=int((cost > cap + 1e-12).sum()),
        budget_exhausted_share=0.0,
    )


@dataclass
class _Data:
    """The pool's recorded numbers on train and test, for fitting and simulated rows."""

    train: EpisodeArrays
    test: EpisodeArrays
    j_train: np.ndarray
    j_test: np.ndarray
    e_train: np.ndarray
    e_test: np.ndarray
    controller: int


def _data(
    table: OutcomeTable, experts: Sequence[ReplayExpert], emb: dict[str, np.ndarray],
    controller: str, ids: Sequence[str],
) -> _Data:  # fmt: skip
    train = sorted(q for q, i in table.queries.items() if i.split == "train")
    a, b = episode_arrays(table, experts, train), episode_arrays(table, experts, ids)
    names = [e.name for e in experts]
    return _Data(
        train=a,
        test=b,
        j_train=judged(a),
        j_test=judged(b),
        e_train=np.stack([emb[q] for q in train]).astype(np.float32),
        e_test=np.stack([emb[q] for q in ids]).astype(np.float32),
        controller=names.index(controller) if controller in names else -1,
    )


def _one_call_row(
    d: _Data, choice: np.ndarray, none: np.ndarray, name: str, tier: str, cap: float
) -> TierMetrics:
    rows = np.arange(len(choice))
    correct = np.where(none, 0.0, d.j_test[rows, choice])
    cost = np.where(none, 0.0, d.test.cost[rows, choice])
    calls = (~none).astype(np.float64)
    return sim_metrics(name, tier, cap, correct, cost, calls, (~none) & (choice != d.controller))


def _predictor_rows(
    res: BenchmarkResult, d: _Data, family: str, est_train: np.ndarray, est_test: np.ndarray,
    tiers: TierSet, top: str,
) -> dict[str, float]:  # fmt: skip
    """Tier rows (calibrated cost weight) and the lambda sweep of a one-call predictor
    router, simulated. Returns the tier weights."""
    mean_cost = d.train.cost.mean(0)
    norm = mean_cost / max(float(mean_cost.max()), 1e-18)
    weights = {}
    for tier in tiers:
        t = tiers[tier]
        w = calibrate_weight(
            est_train, d.j_train, d.train.cost, d.train.worst, t.max_usd_per_query,
            t.target_usd_per_query,
        )  # fmt: skip
        weights[tier] = w
        allowed = d.test.worst <= t.max_usd_per_query
        choice, _, _ = one_call(est_test, d.j_test, d.test.cost, allowed, w, norm)
        m = _one_call_row(d, choice, np.asarray(~allowed.any(1)), f"{family}(lambda={w:.3g})", tier,
                          t.max_usd_per_query)  # fmt: skip
        res.add(m, family, "tier", w, "sim")
    cap = tiers[top].max_usd_per_query
    allowed = d.test.worst <= cap
    for w in LAMBDAS:
        choice, _, _ = one_call(est_test, d.j_test, d.test.cost, allowed, w, norm)
        none = np.asarray(~allowed.any(1))
        m = _one_call_row(d, choice, none, f"{family}(lambda={w:.3g})", top, cap)
        res.add(m, family, "sweep", w, "sim")
    return weights


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


Neural = NeuralPolicy | CascadeRouter


async def run_benchmark(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    tiers: TierSet,
    controller: str,
    embeddings: dict[str, np.ndarray],
    neural: Neural | None,
    *,
    concurrency: int = 64,
    limit: int | None = None,
    sweeps: bool = True,
    controllers: Sequence[ControllerSpec] = (),
    seed: int = 0,
    on_step: Callable[[str], None] | None = None,
    graph: bool = True,
) -> BenchmarkResult:
    """Run the whole comparison on the test split of ``table``. Each of ``controllers``
    adds one row per tier (family ``llm:<label>``), routed ``spec.concurrency`` at a time;
    their ``aclose`` runs at the end, on this event loop. ``seed`` draws the baselines'
    folds and initial weights; ``on_step`` hears the name of each step (progress).
    ``graph=False``: simulated rows only (single models, the predictor routers, the oracle
    sweep and a ``CascadeRouter``'s tiers and sweep), for the spread over seeds."""
    if controllers and not graph:
        raise ConfigError("LLM controllers run through the graph: graph=False excludes them")
    try:
        return await _benchmark(
            table, experts, tiers, controller, embeddings, neural, concurrency, limit, sweeps,
            controllers, seed, on_step or (lambda _: None), graph,
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
    neural: Neural | None,
    concurrency: int,
    limit: int | None,
    sweeps: bool,
    controllers: Sequence[ControllerSpec],
    seed: int,
    step: Callable[[str], None],
    graph: bool,
) -> BenchmarkResult:
    started = time.perf_counter()
    ids = test_queries(table)[:limit]
    top = list(tiers)[-1]
    res = BenchmarkResult(
        table.name,
        [e.name for e in experts],
        controller,
        {t: tiers[t].max_usd_per_query for t in tiers},
        targets={t: tiers[t].target_usd_per_query for t in tiers},
    )

    async def run(policy: Policy, tier: str, conc: int | None = None) -> TierMetrics:
        step(f"{policy.name} @ {tier}")
        return await _run(
            table, experts, policy, tiers, tier, embeddings, controller, ids, conc or concurrency
        )

    d = _data(table, experts, embeddings, controller, ids)
    top_cap = tiers[top].max_usd_per_query
    for k, e in enumerate(experts):  # single models: tier-independent
        choice = np.full(len(ids), k)
        res.add(_one_call_row(d, choice, np.zeros(len(ids), bool), f"always({e.name})", top,
                              top_cap), "single", "single", via="sim")  # fmt: skip
    single_costs = [r["mean_cost_usd"] for r in res.rows]
    res.cost_range = (min(single_costs), max(single_costs))
    step("fitting the baselines' predictors")
    allowed = d.train.worst <= top_cap
    k, knn_oof = choose_knn(d.e_train, d.j_train, d.train.cost, allowed, seed)
    knn = KNNPredictor(d.e_train, d.j_train, k)
    fold = folds_of(len(d.e_train), 5, seed)
    mlp_oof = out_of_fold(lambda e, y: fit_mlp(e, y, seed=seed), d.e_train, d.j_train, fold)
    mf_oof = out_of_fold(lambda e, y: fit_mf(e, y, seed=seed), d.e_train, d.j_train, fold)
    mlp = fit_mlp(d.e_train, d.j_train, seed=seed)
    mf = fit_mf(d.e_train, d.j_train, seed=seed)
    res.fitted["knn_k"] = k
    for family, oof, pred in (("knn", knn_oof, knn), ("mlp", mlp_oof, mlp), ("mf", mf_oof, mf)):
        res.fitted[f"{family}_tier_lambda"] = _predictor_rows(
            res, d, family, oof, pred.predict(d.e_test), tiers, top
        )
    _oracle_sweep(res, d, top, top_cap)
    thr = _try_threshold(table, experts, embeddings)
    for tier in tiers if not graph else ():
        if isinstance(neural, CascadeRouter):  # simulated: the other seeds' spread
            cap = tiers[tier].max_usd_per_query
            res.add(_router_row(neural, neural.point_for(tier, cap), table, experts, ids,
                                embeddings, controller, tier, cap), "neural", "tier",
                    neural.point_for(tier, cap).theta, "sim")  # fmt: skip
    for tier in tiers if graph else ():
        cap = tiers[tier].max_usd_per_query
        res.add(await run(ControllerOnly(controller), tier), "controller-only", "tier")
        res.add(await run(OraclePolicy(table, experts), tier), "oracle", "tier")
        if thr is not None:
            share = calibrate_threshold(thr, table, experts, embeddings, cap)
            res.add(await run(thr.calibrate(share), tier), "threshold", "tier", share)
        res.add(await run(agreement_cascade(table, experts), tier), "cascade", "tier", 2)
        if neural is not None:
            m = await run(neural, tier)
            knob = (
                neural.meta.tier_cost_weight.get(tier)
                if isinstance(neural, NeuralPolicy)
                else neural.point_for(tier, cap).theta
            )
            res.add(m, "neural", "tier", knob)
            rnd = matched_random(experts, single_costs, m.mean_cost_usd)
            res.add(await run(rnd, tier), "random", "tier")
        for spec in controllers:
            res.add(await run(spec.policy, tier, spec.concurrency), spec.family, "tier")
    if sweeps and graph:
        if thr is not None:
            for share in SWEEP_SHARES:
                res.add(await run(thr.calibrate(share), top), "threshold", "sweep", share)
        for agree in SWEEP_AGREE:
            cascade = agreement_cascade(table, experts, agree)
            res.add(await run(cascade, top), "cascade", "sweep", agree)
        if isinstance(neural, NeuralPolicy):
            for w in SWEEP_WEIGHTS:
                policy = NeuralPolicy(neural.params, neural.meta, cost_weight=w)
                res.add(await run(policy, top), "neural", "sweep", w)
    if sweeps and isinstance(neural, CascadeRouter):
        for point in neural.spec.sweep:
            m = _router_row(neural, point, table, experts, ids, embeddings, controller, top,
                            top_cap)  # fmt: skip
            res.add(m, "neural", "sweep", point.theta, "sim")
    llm = [spec.family for spec in controllers]
    families = ("single", "knn", "mlp", "mf", "threshold", "cascade", "neural", "oracle", "random")
    for family in (*families, *llm):
        if res.points(family):
            res.aiq[family] = aiq(
                res.points(family), c_min=res.cost_range[0], c_max=res.cost_range[1]
            )
    _summaries(res, d)
    res.seconds = time.perf_counter() - started
    return res


def _router_row(
    router: CascadeRouter, point: Any, table: OutcomeTable, experts: Sequence[ReplayExpert],
    ids: Sequence[str], emb: dict[str, np.ndarray], controller: str, tier: str, cap: float,
) -> TierMetrics:  # fmt: skip
    correct, cost, calls = router_outcomes(router, table, experts, ids, emb, point, cap)
    first = router.spec.experts[point.cascade[0]]
    escalated = (calls > 1) | ((first != controller) & (calls > 0))
    if point.route_weight is not None:  # a one-call route: escalated when it left the controller
        vectors = np.stack([emb[q] for q in ids]).astype(np.float32)
        reserve = np.asarray(router.spec.reserve_usd)[list(point.cascade)]
        allowed = np.broadcast_to(reserve <= cap + 1e-12, (len(ids), len(point.cascade)))
        pick = router.route_choice(point, vectors, allowed)
        names = np.array([router.spec.experts[i] for i in point.cascade])
        escalated = (calls > 0) & (names[np.maximum(pick, 0)] != controller)
    return sim_metrics(router.at(point).name, tier, cap, correct, cost, calls, escalated)


def _try_threshold(
    table: OutcomeTable, experts: Sequence[ReplayExpert], emb: dict[str, np.ndarray]
) -> Any:
    try:
        return fit_threshold(table, experts, emb)
    except ConfigError:  # no model costs a third of the strongest: no weak partner
        return None


def _oracle_sweep(res: BenchmarkResult, d: _Data, top: str, cap: float) -> None:
    """The oracle family swept like the routers: per query, the best of
    ``correct - lambda * cost / priciest mean cost`` (ties: the cheaper)."""
    mean_cost = d.train.cost.mean(0)
    scale = max(float(mean_cost.max()), 1e-18)
    allowed = d.test.worst <= cap
    for w in LAMBDAS:
        score = d.j_test - (w + 1e-6) * d.test.cost / scale
        choice = np.where(allowed, score, -np.inf).argmax(1)
        none = np.asarray(~allowed.any(1))
        m = _one_call_row(d, choice, none, f"oracle(lambda={w:.3g})", top, cap)
        res.add(m, "oracle", "sweep", w, "sim")


def _summaries(res: BenchmarkResult, d: _Data) -> None:
    """gap_closed and, for two-model pools, RouteLLM's CPT(50%), CPT(80%) and APGR."""
    if {"neural", "single", "knn", "oracle"} <= set(res.aiq):
        base = max(res.aiq["single"], res.aiq["knn"])
        room = res.aiq["oracle"] - base
        res.gap_closed = (res.aiq["neural"] - base) / room if room > 1e-9 else None
    if len(res.pool) != 2 or d.controller < 0:
        return
    singles = {r["policy"]: r["accuracy"] for r in res.rows if r["role"] == "single"}
    weak = singles[f"always({res.controller})"]
    strong = next(v for k, v in singles.items() if k != f"always({res.controller})")
    if strong <= weak:
        return
    for family in ("knn", "mlp", "mf", "threshold", "cascade", "neural", "random", "oracle"):
        pts = [(r["expert_call_ratio"], (r["accuracy"] - weak) / (strong - weak))
               for r in res.rows if r["family"] == family]  # fmt: skip
        if pts:
            res.routing_vs_2models[family] = pgr_summary(pts)


def pgr_summary(points: Sequence[tuple[float, float]]) -> dict[str, float]:
    """RouteLLM's figures from (share of strong calls, performance gap recovered) points:
    the best PGR reachable at each share (the points' upper envelope, running max), then
    CPT(x) = the smallest share whose PGR reaches x (1.0 if none does), and APGR = the
    envelope's mean over shares 0..1 (area under the PGR curve)."""
    grid = np.linspace(0.0, 1.0, 101)
    pts = sorted(points)
    env = np.array([max([p for s, p in pts if s <= g + 1e-9], default=0.0) for g in grid])
    env = np.maximum.accumulate(np.clip(env, 0.0, None))

    def cpt(x: float) -> float:
        hit = np.flatnonzero(env >= x)
        return float(grid[hit[0]]) if len(hit) else 1.0

    return {"cpt50": cpt(0.5), "cpt80": cpt(0.8), "apgr": float(env.mean())}


_STYLE = {
    "single": ("o", "grey"),
    "controller-only": ("s", "black"),
    "oracle": ("*", "gold"),
    "knn": ("^", "tab:blue"),
    "mlp": ("<", "tab:cyan"),
    "mf": (">", "tab:olive"),
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
        if family in ("knn", "mlp", "mf", "oracle", "threshold", "cascade", "neural"):
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
