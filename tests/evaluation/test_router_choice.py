"""The router's choices: the replies' vote (simulation == graph), and the per-point fallback
to the single model when routing's cross-validated gain is within validation noise."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from corl_graph._exceptions import ConfigError
from corl_graph.evaluation import (
    RouterFitConfig,
    fit_router,
    resolve_pool,
    route_queries,
    router_outcomes,
)
from corl_graph.evaluation._router_fit import (
    _choose,
    _Cloud,
    vote_position,
    weighted_vote_position,
)
from corl_graph.experts import OutcomeTable, PriceSheet
from corl_graph.policies import CascadeRouter, OperatingPoint

PRICES = {"a": PriceSheet(0.1, 0.1), "b": PriceSheet(0.2, 0.2), "c": PriceSheet(1.0, 1.0)}


def test_vote_position_by_hand():
    ids = np.array([
        [3, 3, 5],  # two agree against the last: the first pair's latest reply (1)
        [3, 5, 3],  # 3 twice, latest at 2
        [3, 5, 6],  # no two agree: -1 (the last reply answers)
        [3, 3, 5],  # only one reply made: -1
        [-1, -1, 4],  # no answers agree (-1 is no answer, never a vote)
        [4, 5, 4],  # two made: 4 and 5 disagree, the third was not made
    ])  # fmt: skip
    calls = np.array([3, 3, 3, 1, 3, 2])
    assert vote_position(ids, calls).tolist() == [1, 2, -1, -1, -1, -1]


def test_weighted_vote_position_by_hand():
    ids = np.array([
        [3, 3, 5],  # 3 carries 0.2 + 0.3 = 0.5 against 5's 0.9: the lone trusted reply (2)
        [3, 5, 3],  # 3 carries 0.8 against 0.3: its latest reply (2)
        [3, 5, 6],  # no two agree: the most trusted reply (0)
        [3, 3, 5],  # one reply made: it answers (0)
        [-1, -1, -1],  # no answers: -1 (the last reply answers)
        [4, 4, 9],  # tie 0.5 + 0.5 against 1.0: the one given latest (2)
    ])  # fmt: skip
    w = np.array([
        [0.2, 0.3, 0.9], [0.4, 0.3, 0.4], [0.9, 0.5, 0.1], [0.1, 0.9, 0.9],
        [0.5, 0.5, 0.5], [0.5, 0.5, 1.0],
    ])  # fmt: skip
    calls = np.array([3, 3, 3, 1, 3, 3])
    assert weighted_vote_position(ids, w, calls).tolist() == [2, 2, 0, 0, -1, 2]


def _voting_table(n: int = 90, seed: int = 3) -> tuple[OutcomeTable, dict[str, np.ndarray]]:
    """Three models whose answers to each query are drawn from "7" (right), "8" and "9", so
    two wrong replies sometimes agree and outvote a right one."""
    rng = np.random.default_rng(seed)
    rows, emb = [], {}
    for i in range(n):
        q = f"q{i:03d}"
        v = rng.normal(size=384)
        emb[q] = v / np.linalg.norm(v)
        for m, p_right in (("a", 0.5), ("b", 0.6), ("c", 0.7)):
            ans = "7" if rng.random() < p_right else str(rng.choice(["8", "9"]))
            rows.append(dict(
                query_id=q, split="train" if i < 60 else "test", model=m,
                correct=float(ans == "7"), answer=ans, reference="7", prompt=f"question {i}",
                response=f"so {ans}", input_tokens=100, output_tokens=20,
                cost_usd=PRICES[m].cost(100, 20),
            ))  # fmt: skip
    return OutcomeTable.from_rows(rows, prices=PRICES, name="votes"), emb


def test_a_voting_point_answers_alike_in_the_graph_and_the_simulation():
    table, emb = _voting_table()
    setup = resolve_pool(table)
    router = fit_router(table, setup.experts, setup.tiers, emb, controller=setup.controller,
                        config=RouterFitConfig(seed=0))  # fmt: skip
    arrays = dict(router.arrays)
    # every reply scores 0.5 against a threshold of 0.9: the cascade always calls all three
    arrays["w/0-1-2/1"] = np.zeros(11)
    arrays["w/0-1-2/2"] = np.zeros(11)
    point = OperatingPoint(cascade=(0, 1, 2), theta=0.9, vote=True)
    voting = CascadeRouter(router.spec, arrays, point=point)
    ids = sorted(q for q in table.queries if table.queries[q].split == "test")
    tier = list(setup.tiers)[-1]
    cap = setup.tiers[tier].max_usd_per_query
    correct, cost, calls = router_outcomes(voting, table, setup.experts, ids, emb, point, cap)
    last, _, _ = router_outcomes(voting, table, setup.experts, ids, emb,
                                 OperatingPoint(cascade=(0, 1, 2), theta=0.9), cap)  # fmt: skip
    out = asyncio.run(route_queries(table, setup.experts, voting, setup.tiers, tier,
                                    query_ids=ids, features=emb))  # fmt: skip
    assert [o.correct for o in out] == pytest.approx(list(correct))
    assert [o.cost_usd for o in out] == pytest.approx(list(cost))
    assert list(calls) == [3] * len(ids)
    assert not np.array_equal(correct, last)  # the vote changed some answers


def test_a_weighted_voting_point_answers_alike_in_the_graph_and_the_simulation(tmp_path: Path):
    table, emb = _voting_table()
    setup = resolve_pool(table)
    router = fit_router(table, setup.experts, setup.tiers, emb, controller=setup.controller,
                        config=RouterFitConfig(seed=0))  # fmt: skip
    arrays = dict(router.arrays)
    for key in ("w/0-1/1", "w/0-1-2/1", "w/0-1-2/2"):
        arrays[key] = np.zeros(11)  # every reply scores 0.5 < 0.9: every expert is called
    ids = sorted(q for q in table.queries if table.queries[q].split == "test")
    tier = list(setup.tiers)[-1]
    cap = setup.tiers[tier].max_usd_per_query
    changed = []
    for cascade in ((0, 1), (0, 1, 2)):
        point = OperatingPoint(cascade=cascade, theta=0.9, vote=True, weighted=True)
        voting = CascadeRouter(router.spec, arrays, point=point)
        correct, cost, calls = router_outcomes(voting, table, setup.experts, ids, emb, point, cap)
        plain = OperatingPoint(cascade=cascade, theta=0.9, vote=True)
        counted, _, _ = router_outcomes(voting, table, setup.experts, ids, emb, plain, cap)
        out = asyncio.run(route_queries(table, setup.experts, voting, setup.tiers, tier,
                                        query_ids=ids, features=emb))  # fmt: skip
        assert [o.correct for o in out] == pytest.approx(list(correct))
        assert [o.cost_usd for o in out] == pytest.approx(list(cost))
        assert list(calls) == [len(cascade)] * len(ids)
        changed.append(not np.array_equal(correct, counted))
    assert any(changed)  # weighting changed some answers
    spec = dataclasses.replace(router.spec, tiers={t: point for t in router.spec.tiers})
    saved = CascadeRouter.load(CascadeRouter(spec, arrays).save(tmp_path / "r"))
    assert all(p.weighted and p.vote for p in saved.spec.tiers.values())


def _cloud(
    route_fold_acc: list[float], single_fold_acc: list[float], per_fold: int,
    route_cost: float = 1e-4,
) -> _Cloud:  # fmt: skip
    """One single-model point (mean cost 1e-4) and one routing point, accuracy per fold."""
    acc = np.array([single_fold_acc, route_fold_acc]) * per_fold
    cost = np.array([[1e-4] * len(single_fold_acc), [route_cost] * len(route_fold_acc)])
    return _Cloud(
        points=[((0,), 1.01, None, False, False), ((0, 1), 0.5, None, False, False)],
        acc=acc,
        cost=cost * per_fold,
        single=np.array([True, False]),
    )


def test_routing_is_kept_only_when_its_held_out_gain_exceeds_the_noise():
    counts = np.full(5, 100.0)
    steady = _cloud([0.82] * 5, [0.80] * 5, 100)  # +2 points on every fold
    i, fell_back, gain = _choose(steady, counts, None, 0.0, 1.0)
    assert (i, fell_back) == (1, False) and gain == pytest.approx(0.02)
    # +1.6 points on average, all from one fold: the per-fold gains (10, -2, 0, 0, 0 points)
    # have a standard error of 2.1 points, more than the gain
    lucky = _cloud([0.90, 0.78, 0.80, 0.80, 0.80], [0.80] * 5, 100)
    i, fell_back, gain = _choose(lucky, counts, None, 0.0, 1.0)
    assert (i, fell_back) == (0, True) and gain == pytest.approx(0.016)
    i, fell_back, _ = _choose(lucky, counts, None, 0.0, 0.0)  # no margin: routing kept
    assert (i, fell_back) == (1, False)


def test_noise_z_must_not_be_negative():
    with pytest.raises(ConfigError, match="noise_z"):
        RouterFitConfig(noise_z=-1.0)
    assert math.isclose(RouterFitConfig().noise_z, 1.0)


def test_routing_as_accurate_and_cheaper_is_kept():
    counts = np.full(5, 100.0)
    # within noise of the single model (+0.4 points from one fold) but at half its cost
    tied = _cloud([0.82, 0.80, 0.80, 0.80, 0.80], [0.80] * 5, 100, route_cost=5e-5)
    i, fell_back, _ = _choose(tied, counts, None, 0.002, 1.0)
    assert (i, fell_back) == (1, False)
    # 1 point less accurate on every fold: cheaper does not make up for it
    worse = _cloud([0.79] * 5, [0.80] * 5, 100, route_cost=5e-5)
    i, fell_back, _ = _choose(worse, counts, None, 0.002, 1.0)
    assert (i, fell_back) == (0, True)


def test_a_cost_band_chooses_only_points_inside_it():
    counts = np.full(5, 100.0)
    # a single model at 1e-4 and a routing point at 3e-4, both 0.80 on every fold
    cloud = _cloud([0.80] * 5, [0.80] * 5, 100, route_cost=3e-4)
    assert _choose(cloud, counts, 1e-3, 0.002, 1.0) == (0, True, pytest.approx(0.0))
    i, fell_back, _ = _choose(cloud, counts, 1e-3, 0.002, 1.0, floor=2e-4)  # type: ignore[misc]
    assert (i, fell_back) == (1, False)  # the single model lies below the band
    assert _choose(cloud, counts, 1e-3, 0.002, 1.0, floor=5e-4) is None  # an empty band


def test_a_banded_sweep_goes_on_past_the_cheapest_best_point_and_runs_alike_in_the_graph(
    tmp_path: Path,
):
    table, emb = _voting_table()
    setup = resolve_pool(table)
    plain, banded = (
        fit_router(table, setup.experts, setup.tiers, emb, controller=setup.controller,
                   config=RouterFitConfig(seed=0, sweep_bands=bands))
        for bands in (False, True)
    )  # fmt: skip
    costs = [p.train_cost_usd for p in banded.spec.sweep]
    assert costs == sorted(costs)
    # each point within its spend target (its label); on this table the plain sweep stops
    # at fewer spend levels than the banded one
    assert all(p.train_cost_usd <= float(p.label[2:]) * 1.01 for p in banded.spec.sweep)
    assert len(banded.spec.sweep) > len(plain.spec.sweep), (banded.spec.sweep, plain.spec.sweep)
    assert banded.spec.tiers == plain.spec.tiers  # the tiers are chosen as before
    ids = sorted(q for q in table.queries if table.queries[q].split == "test")
    tier = list(setup.tiers)[-1]
    cap = setup.tiers[tier].max_usd_per_query
    saved = CascadeRouter.load(banded.save(tmp_path / "r"))
    assert [(p.label, p.cascade, p.route_weight, p.vote) for p in saved.spec.sweep] == [
        (p.label, p.cascade, p.route_weight, p.vote) for p in banded.spec.sweep
    ]
    for point in saved.spec.sweep:
        correct, cost, _ = router_outcomes(saved, table, setup.experts, ids, emb, point, cap)
        out = asyncio.run(route_queries(table, setup.experts, saved.at(point), setup.tiers,
                                        tier, query_ids=ids, features=emb))  # fmt: skip
        assert [o.correct for o in out] == pytest.approx(list(correct))
        assert [o.cost_usd for o in out] == pytest.approx(list(cost))
