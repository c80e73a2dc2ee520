"""Fitting the learned cascade router (``CascadeRouter``) on a table's train split, numpy only.

1. Pareto-prune the pool to at most ``max_candidates`` experts (``pareto_pool``).
2. Correctness predictor: kNN over embeddings, k chosen by 5-fold cross-validation (Brier
   score); its estimates for the train queries are out-of-fold.
3. Every ordered cascade of up to ``max_len`` candidates, cheapest first (with 12
   candidates: 298), gets a logistic stop scorer per position, fitted out of fold.
4. Each (cascade, threshold) is simulated on the train queries with their out-of-fold
   scores at each tier's cap: per-fold accuracy and mean cost.
5. Per tier: the most accurate point within its mean-spend target (ties within 0.2 points:
   the cheaper), routing points and single models apart. Whether routing beats the best
   single model is decided by cross-validation of that choice itself (choose on four folds,
   score on the fifth): if it does not gain on the held-out folds, the tier falls back to the
   single model. The cost/accuracy sweep is chosen the same way at 20 spend targets, one
   point per cost band (between the previous target and this one), so the curve goes on up
   the cost axis past the cheapest most-accurate point.
6. The used scorers are refitted on all train queries and saved with the router.

Fitting takes seconds per table; ``fit_router`` reports progress through ``on_progress``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from corl_graph._exceptions import ConfigError
from corl_graph.budget import TierSet
from corl_graph.evaluation._pool import pareto_pool, train_ids
from corl_graph.evaluation._predictors import LAMBDAS, fit_mf, fit_mlp, out_of_fold
from corl_graph.evaluation._sim import EpisodeArrays, episode_arrays
from corl_graph.experts import OutcomeTable, ReplayExpert
from corl_graph.policies import (
    CascadeRouter,
    OperatingPoint,
    RouterSpec,
    knn_estimate,
    stop_features,
    stop_scores,
)

__all__ = [
    "RouterFitConfig",
    "fit_router",
    "judged",
    "router_outcomes",
    "simulate_cascade",
    "weighted_vote_position",
]

KS = (5, 10, 20, 40, 80)
_EPS = 1e-12


@dataclass(frozen=True)
class RouterFitConfig:
    """Settings of ``fit_router``; ``seed`` draws the folds."""

    folds: int = 5
    max_candidates: int = 12
    max_len: int = 3
    thetas: tuple[float, ...] = (*(round(0.3 + 0.035 * i, 3) for i in range(21)), 1.01)
    sweep_points: int = 20
    tolerance: float = 0.002
    ridge: float = 1.0
    seed: int = 0
    # routing replaces the single model only when its cross-validated gain exceeds
    # noise_z standard errors of that gain (over the folds)
    noise_z: float = 1.0
    # cascades of three or more experts are also tried answering with the replies' vote
    vote: bool = True
    # cascades of two or more are also tried answering with a vote weighted by each expert's
    # estimated correctness (the stacked predictor's, out of fold): which reply to trust.
    # Off by default: on router_train_cv (5 folds, full pools) it left ARC and MBPP unchanged
    # and GSM8K at +0.0002 +- 0.0061 over max(hull, kNN) against +0.0013 +- 0.0073 without
    weighted_vote: bool = False
    # The sweep point at spend target t is the most accurate point costing between the
    # previous target and t (True: one point per cost band, so the curve goes on past the
    # cheapest most-accurate point, as the predictor routers' lambda sweeps do) or costing
    # at most t (False: the sweep stops at the cheapest point as accurate as any). On
    # router_train_cv (5 folds, full pools) True lifted the difference over max(hull, kNN)
    # on GSM8K from +0.0013 +- 0.0073 to +0.0033 +- 0.0052; tiers are chosen the same either way
    sweep_bands: bool = True

    def __post_init__(self) -> None:
        if self.folds < 2 or self.max_candidates < 1 or not 1 <= self.max_len <= 4:
            raise ConfigError("RouterFitConfig: folds >= 2, max_candidates >= 1, max_len 1..4")
        if not self.noise_z >= 0:
            raise ConfigError(f"RouterFitConfig: noise_z must be >= 0, got {self.noise_z}")


def judged(a: EpisodeArrays) -> np.ndarray:
    """What a reply scores when it is the answer, as the harness judges it: (N, K)."""
    ref = a.reference_id[:, None]
    by_ref = np.where(a.answer_id >= 0, (a.answer_id == ref).astype(np.float64), 0.0)
    out = np.where(ref >= 0, by_ref, a.correct)
    return np.asarray(np.where(a.textless, a.correct, out))


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """L2-regularised logistic regression by Newton steps: (N, F), (N,) in [0, 1] -> (F,).
    Column 0 is the intercept (not penalised)."""
    f = x.shape[1]
    w = np.zeros(f)
    pen = np.full(f, ridge)
    pen[0] = 1e-6
    for _ in range(25):
        p = stop_scores(x, w)
        grad = x.T @ (p - y) + pen * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(pen)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w


def simulate_cascade(
    cascade: Sequence[int],
    scores: np.ndarray,
    theta: float,
    cap: float,
    *,
    judged_: np.ndarray,
    cost: np.ndarray,
    worst: np.ndarray,
    reserve: np.ndarray,
    answer_id: np.ndarray | None = None,
    vote_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run one operating point on N queries: (N,) correctness, cost and calls.

    ``scores`` (N, m-1): the stop score after each call but the last. A call is made only
    when the router's reservation estimate fits what is left of the cap, and reaches the
    expert only when the ledger's worst case does too (else the run ends with what it has),
    as in the graph. The answer is the last reply's; with ``answer_id`` (N, K) given (a
    voting point), the replies' majority answer when at least two agree (``vote_position``);
    with ``vote_weights`` (N, m) too (a weighted voting point, cascades of two or more), the
    answer of the largest summed weight (``weighted_vote_position``)."""
    n = judged_.shape[0]
    correct = np.zeros(n)
    spent = np.zeros(n)
    calls = np.zeros(n, np.int64)
    live = np.ones(n, bool)
    for j, k in enumerate(cascade):
        room = cap - spent
        go = live & (reserve[k] <= room + _EPS)
        denied = go & (worst[:, k] > room + _EPS)
        go &= ~denied
        spent[go] += cost[go, k]
        calls[go] += 1
        correct[go] = judged_[go, k]
        live = go
        if j < len(cascade) - 1:
            live = live & (scores[:, j] < theta)
    if answer_id is not None and vote_weights is not None and len(cascade) > 1:
        pos = weighted_vote_position(answer_id[:, list(cascade)], vote_weights, calls)
        voted = pos >= 0
        picked = np.asarray(cascade)[np.maximum(pos, 0)]
        correct = np.where(voted, judged_[np.arange(n), picked], correct)
    elif answer_id is not None and len(cascade) > 2:
        pos = vote_position(answer_id[:, list(cascade)], calls)
        voted = pos >= 0
        picked = np.asarray(cascade)[np.maximum(pos, 0)]
        correct = np.where(voted, judged_[np.arange(n), picked], correct)
    return correct, spent, calls


def vote_position(answer_id: np.ndarray, calls: np.ndarray) -> np.ndarray:
    """Which of the first ``calls`` replies a voting point answers with: the answer given by
    the most replies when at least two agree (ties: the one given latest), as the position of
    its latest reply; -1 when no two replies agree (the last reply answers). (N, m) answer
    ids (-1: none), (N,) replies made -> (N,)."""
    n, m = answer_id.shape
    made = np.arange(m)[None, :] < calls[:, None]
    valid = made & (answer_id >= 0)
    same = (answer_id[:, :, None] == answer_id[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    count = same.sum(2)  # (N, m): replies sharing each reply's answer
    # the latest position among those with the largest count
    key = count * (m + 1) + np.arange(m)[None, :]
    best = key.argmax(1)
    return np.where(count[np.arange(n), best] >= 2, best, -1)


def weighted_vote_position(
    answer_id: np.ndarray, weights: np.ndarray, calls: np.ndarray
) -> np.ndarray:
    """Which of the first ``calls`` replies a weighted voting point answers with: the answer
    whose replies' summed ``weights`` is largest (ties: the one given latest), as the
    position of its latest reply; -1 when no reply holds an answer (the last reply answers).
    (N, m) answer ids (-1: none), (N, m) weights, (N,) replies made -> (N,)."""
    m = answer_id.shape[1]
    made = np.arange(m)[None, :] < calls[:, None]
    valid = made & (answer_id >= 0)
    same = (answer_id[:, :, None] == answer_id[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    total = (same * weights[:, None, :]).sum(2)  # (N, m): weight behind each reply's answer
    total = np.where(valid, total, -np.inf)
    best = total.max(1, keepdims=True)
    # the latest position among those within rounding of the largest total
    near = valid & (total >= best - 1e-9)
    pos = np.where(near, np.arange(m)[None, :], -1).max(1)
    return np.asarray(np.where(valid.any(1), pos, -1))


def _route_outcome(
    est: np.ndarray, w: float, cost_norm: np.ndarray, allowed: np.ndarray, judged_: np.ndarray,
    cost: np.ndarray, worst: np.ndarray, cap: float,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A one-call route's correctness and cost per query: (N,), (N,)."""
    score = np.where(allowed, est - w * cost_norm[None, :], -np.inf)
    choice = score.argmax(1)
    rows = np.arange(len(est))
    reached = allowed.any(1) & (worst[rows, choice] <= cap + _EPS)
    return (
        np.where(reached, judged_[rows, choice], 0.0),
        np.where(reached, cost[rows, choice], 0.0),
    )


def _folds(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold = np.arange(n) % k
    rng.shuffle(fold)
    return fold


def _oof_knn(emb: np.ndarray, y: np.ndarray, fold: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros_like(y)
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        out[te] = knn_estimate(emb[tr], y[tr], emb[te], k)
    return out


def choose_k(emb: np.ndarray, y: np.ndarray, fold: np.ndarray) -> tuple[int, np.ndarray]:
    """The k of the kNN predictor with the lowest cross-validated Brier score, and its
    out-of-fold estimates (N, K)."""
    best: tuple[float, int, np.ndarray] | None = None
    for k in KS:
        est = _oof_knn(emb, y, fold, k)
        brier = float(((est - y) ** 2).mean())
        if best is None or brier < best[0] - 1e-9:
            best = (brier, k, est)
    assert best is not None
    return best[1], best[2]


@dataclass
class _Cloud:
    """Every operating point's per-fold sums at one cap: (P, F) accuracy sums, cost sums."""

    points: list[tuple[tuple[int, ...], float, float | None, bool, bool]]
    acc: np.ndarray
    cost: np.ndarray
    single: np.ndarray  # (P,) bool: a one-expert point


def _select(
    cloud: _Cloud, counts: np.ndarray, use: np.ndarray, target: float | None, tol: float,
    single: bool, floor: float = 0.0,
) -> int | None:  # fmt: skip
    """The index of the most accurate point (of the single or the routing kind) on folds
    ``use``, within ``target`` mean cost and above ``floor``; ties within ``tol``: the
    cheapest."""
    n = counts[use].sum()
    acc = cloud.acc[:, use].sum(1) / n
    cost = cloud.cost[:, use].sum(1) / n
    ok = cloud.single == single
    if target is not None:
        ok &= cost <= target + _EPS
    if floor > 0:
        ok &= cost > floor + _EPS
    if not ok.any():
        return None
    best = acc[ok].max()
    near = np.flatnonzero(ok & (acc >= best - tol))
    return int(near[np.argmin(cost[near])])


def _choose(
    cloud: _Cloud, counts: np.ndarray, target: float | None, tol: float, z: float,
    floor: float = 0.0,
) -> tuple[int, bool, float] | None:  # fmt: skip
    """(point, fell back, cross-validated gain of routing over the single model).

    The choice of each kind is made on all folds but one and scored on the one left out.
    Routing is kept when its mean held-out accuracy gain exceeds ``z`` standard errors of
    the per-fold gains (validation noise), or when it loses at most ``tol`` accuracy and
    costs less on the held-out folds (as accurate, cheaper); else the single model is.
    With a ``floor`` (a cost band): only points costing more than it, and None when the band
    holds none."""
    folds = len(counts)
    everything = np.ones(folds, bool)
    single = _select(cloud, counts, everything, target, tol, True, floor)
    route = _select(cloud, counts, everything, target, tol, False, floor)
    if single is None and route is None:  # nothing fits the target: the cheapest point
        if floor > 0:
            return None
        return int(np.argmin(cloud.cost.sum(1))), True, math.nan
    if route is None:
        return int(single), True, math.nan  # type: ignore[arg-type]
    if single is None:
        return route, False, math.nan
    diffs = np.zeros(folds)
    saved = 0.0  # held-out spend of the single-model choice minus routing's
    for f in range(folds):
        use = np.arange(folds) != f
        r = _select(cloud, counts, use, target, tol, False, floor)
        s = _select(cloud, counts, use, target, tol, True, floor)
        r_acc = cloud.acc[r, f] if r is not None else 0.0
        s_acc = cloud.acc[s, f] if s is not None else 0.0
        diffs[f] = (r_acc - s_acc) / max(counts[f], 1.0)
        if r is not None and s is not None:
            saved += float(cloud.cost[s, f] - cloud.cost[r, f])
    gain = float((diffs * counts).sum() / counts.sum())
    margin = z * float(diffs.std(ddof=1)) / math.sqrt(folds)
    keep = gain > max(margin, 0.0) or (gain >= -tol and saved > 0)
    return (route, False, gain) if keep else (single, True, gain)


def fit_router(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    tiers: TierSet,
    embeddings: dict[str, np.ndarray],
    *,
    controller: str = "",
    config: RouterFitConfig | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    max_output_tokens: int | None = None,
) -> CascadeRouter:
    """Fit the cascade router on the train split of ``table`` (see the module docstring)."""
    cfg = config or RouterFitConfig()
    ids = train_ids(table)
    cands = pareto_pool(table, experts, cfg.max_candidates)
    a = episode_arrays(table, cands, ids)
    j_all = judged(a)
    emb = np.stack([embeddings[q] for q in ids]).astype(np.float32)
    fold = _folds(len(ids), cfg.folds, cfg.seed)
    counts = np.bincount(fold, minlength=cfg.folds).astype(np.float64)
    knn_k, knn_oof = choose_k(emb, j_all, fold)
    # the predictor is a stack: the mean of kNN, MLP and matrix-factorisation estimates, each
    # out of fold for the train queries (what it says of queries it has not seen)
    mlp_oof = out_of_fold(lambda e, y: fit_mlp(e, y, seed=cfg.seed), emb, j_all, fold)
    mf_oof = out_of_fold(lambda e, y: fit_mf(e, y, seed=cfg.seed), emb, j_all, fold)
    p_oof = (knn_oof + mlp_oof + mf_oof) / 3
    reserve = a.worst.max(0)
    logt = np.log1p(a.out_tokens)
    t_mean, t_std = logt.mean(0), logt.std(0)
    tz_all = (logt - t_mean) / np.maximum(t_std, 1e-3)
    has = a.answer_id >= 0
    votable = (cfg.vote or cfg.weighted_vote) and bool(has.any())
    k = len(cands)
    cascades = [c for m in range(1, cfg.max_len + 1) for c in combinations(range(k), m)]
    caps = sorted({tiers[t].max_usd_per_query for t in tiers})
    clouds = {cap: _Cloud([], [], [], []) for cap in caps}  # type: ignore[arg-type]
    cost_norm = a.cost.mean(0) / max(float(a.cost.mean(0).max()), 1e-18)
    sums: dict[float, tuple[list[np.ndarray], list[np.ndarray], list[bool]]] = {
        cap: ([], [], []) for cap in caps
    }
    for step, c in enumerate(cascades):
        cl = list(c)
        scores = np.zeros((len(ids), max(len(c) - 1, 1)))
        for j in range(1, len(c)):
            x = stop_features(p_oof[:, cl], a.answer_id[:, cl], has[:, cl], tz_all[:, cl], j)
            y = j_all[:, cl[j - 1]]
            for f in range(cfg.folds):
                tr, te = fold != f, fold == f
                w = fit_logistic(x[tr], y[tr], cfg.ridge)
                scores[te, j - 1] = stop_scores(x[te], w)
        thetas = cfg.thetas if len(c) > 1 else (1.01,)
        votes: list[tuple[bool, bool]] = [(False, False)]
        if votable and cfg.vote and len(c) > 2:
            votes.append((True, False))
        if votable and cfg.weighted_vote and len(c) > 1:
            votes.append((True, True))
        for cap, theta, (vote, wtd) in ((x, t, v) for x in caps for t in thetas for v in votes):
            ok, spent, _ = simulate_cascade(
                c, scores, theta, cap, judged_=j_all, cost=a.cost, worst=a.worst,
                reserve=reserve, answer_id=a.answer_id if vote else None,
                vote_weights=p_oof[:, cl] if wtd else None,
            )  # fmt: skip
            clouds[cap].points.append((c, theta, None, vote, wtd))
            sums[cap][0].append(np.bincount(fold, ok, cfg.folds))
            sums[cap][1].append(np.bincount(fold, spent, cfg.folds))
            sums[cap][2].append(len(c) == 1)
        if on_progress is not None:
            on_progress(step + 1, len(cascades))
    everyone = tuple(range(k))
    for cap in caps:  # one-call routes over every candidate, swept over the cost weight
        allowed = np.broadcast_to(reserve <= cap + _EPS, (len(ids), k))
        for weight in LAMBDAS:
            ok, spent = _route_outcome(
                p_oof, weight, cost_norm, allowed, j_all, a.cost, a.worst, cap
            )
            clouds[cap].points.append((everyone, math.nan, weight, False, False))
            sums[cap][0].append(np.bincount(fold, ok, cfg.folds))
            sums[cap][1].append(np.bincount(fold, spent, cfg.folds))
            sums[cap][2].append(False)
    for cap in caps:
        clouds[cap].acc = np.array(sums[cap][0])
        clouds[cap].cost = np.array(sums[cap][1])
        clouds[cap].single = np.array(sums[cap][2])

    n = counts.sum()

    def point(
        cap: float, target: float | None, label: str, floor: float = 0.0
    ) -> tuple[OperatingPoint, float] | None:
        cloud = clouds[cap]
        chosen = _choose(cloud, counts, target, cfg.tolerance, cfg.noise_z, floor)
        if chosen is None:
            return None
        i, fell_back, gain = chosen
        c, theta, w, vote, wtd = cloud.points[i]
        op = OperatingPoint(
            cascade=tuple(int(x) for x in c),
            theta=float(theta),
            route_weight=w,
            vote=vote,
            weighted=wtd,
            fallback=fell_back,
            train_accuracy=float(cloud.acc[i].sum() / n),
            train_cost_usd=float(cloud.cost[i].sum() / n),
            label=label,
        )
        return op, gain

    tier_points: dict[str, OperatingPoint] = {}
    gains: dict[str, float] = {}
    for t in tiers:
        tier = tiers[t]
        target = tier.target_usd_per_query
        found = point(tier.max_usd_per_query, target, t)
        assert found is not None  # no floor: some point is always chosen
        tier_points[t], gains[t] = found
    top = caps[-1]
    single_costs = a.cost.mean(0)
    lo, hi = float(single_costs.min()), float(single_costs.max())
    sweep: list[OperatingPoint] = []
    targets = np.geomspace(max(lo, hi * 1e-6), hi, cfg.sweep_points)
    for i, target in enumerate(targets):
        # a band's floor: the previous target (the first band reaches down to nothing)
        floor = float(targets[i - 1]) if cfg.sweep_bands and i > 0 else 0.0
        found = point(top, float(target), f"t={target:.2e}", floor)
        if found is None:
            continue
        op = found[0]
        if all((op.cascade, op.theta, op.route_weight, op.vote, op.weighted)
               != (s.cascade, s.theta, s.route_weight, s.vote, s.weighted)
               for s in sweep):  # fmt: skip
            sweep.append(op)
    arrays: dict[str, np.ndarray] = {"index": emb, "correct": j_all, "cost_norm": cost_norm}
    for prefix, pred in (("mlp/", fit_mlp(emb, j_all, seed=cfg.seed)),
                         ("mf/", fit_mf(emb, j_all, seed=cfg.seed))):  # fmt: skip
        arrays.update({prefix + key: v for key, v in pred.params.items()})
    for op in [*tier_points.values(), *sweep]:
        if op.route_weight is not None:
            continue
        cl = list(op.cascade)
        for j in range(1, len(cl)):
            key = f"w/{op.key}/{j}"
            if key in arrays:
                continue
            # the deployed predictor uses every train query, so the scorer is refitted on
            # out-of-fold estimates (what the predictor says of queries it has not seen)
            x = stop_features(p_oof[:, cl], a.answer_id[:, cl], has[:, cl], tz_all[:, cl], j)
            arrays[key] = fit_logistic(x, j_all[:, cl[j - 1]], cfg.ridge)
    spec = RouterSpec(
        experts=tuple(e.name for e in cands),
        reserve_usd=tuple(float(r) for r in reserve),
        knn_k=knn_k,
        token_mean=tuple(float(v) for v in t_mean),
        token_std=tuple(float(v) for v in t_std),
        tiers=tier_points,
        tier_caps_usd={t: tiers[t].max_usd_per_query for t in tiers},
        sweep=tuple(sweep),
        embed_dim=emb.shape[1],
        table=table.name,
        controller=controller,
        notes={
            "pool": [e.name for e in experts],
            "cascades": len(cascades),
            "train_queries": len(ids),
            "cv_gain_over_single": gains,
            "tier_targets_usd": {t: tiers[t].target_usd_per_query for t in tiers},
            "max_output_tokens": max_output_tokens,
            "seed": cfg.seed,
        },
    )
    return CascadeRouter(spec, arrays)


def router_outcomes(
    router: CascadeRouter,
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    query_ids: Sequence[str],
    embeddings: dict[str, np.ndarray],
    point: OperatingPoint,
    cap: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What ``router`` does at ``point`` under ``cap`` on ``query_ids``, simulated (the same
    decisions as ``CascadeRouter.decide`` in the graph): (N,) correctness, cost, calls."""
    by_name = {e.name: e for e in experts}
    missing = [n for n in router.spec.experts if n not in by_name]
    if missing:
        raise ConfigError(f"the router's experts {missing} are not in the pool")
    cands = [by_name[n] for n in router.spec.experts]
    a = episode_arrays(table, cands, query_ids)
    emb = np.stack([embeddings[q] for q in query_ids]).astype(np.float32)
    reserve = np.asarray(router.spec.reserve_usd)
    if point.route_weight is not None:
        cl = list(point.cascade)
        allowed = np.broadcast_to(reserve[cl] <= cap + _EPS, (len(query_ids), len(cl)))
        pick = router.route_choice(point, emb, allowed)
        rows = np.arange(len(query_ids))
        choice = np.asarray(cl)[np.maximum(pick, 0)]
        reached = (pick >= 0) & (a.worst[rows, choice] <= cap + _EPS)
        correct = np.where(reached, judged(a)[rows, choice], 0.0)
        cost = np.where(reached, a.cost[rows, choice], 0.0)
        return correct, cost, reached.astype(np.int64)
    cl = list(point.cascade)
    p_hat = router.estimate(emb)[:, cl]
    tz = router.tokens_z(cl, a.out_tokens[:, cl])
    has = a.answer_id[:, cl] >= 0
    # answer ids: the table's ids are per query and shared by all experts, like the router's
    scores = np.zeros((len(query_ids), max(len(cl) - 1, 1)))
    for j in range(1, len(cl)):
        x = stop_features(p_hat, a.answer_id[:, cl], has, tz, j)
        scores[:, j - 1] = stop_scores(x, router.scorer(point, j))
    return simulate_cascade(
        point.cascade, scores, point.theta, cap, judged_=judged(a), cost=a.cost,
        worst=a.worst, reserve=reserve, answer_id=a.answer_id if point.vote else None,
        vote_weights=p_hat if point.vote and point.weighted else None,
    )  # fmt: skip
