"""The learned cascade router: fit on a synthetic table, graph == simulation, fallback to the
best single model, persistence, and ``corl-graph fit`` + ``eval --policy`` end to end."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from corl_graph._exceptions import DataFormatError
from corl_graph.cli import main
from corl_graph.evaluation import (
    RouterFitConfig,
    fit_router,
    resolve_pool,
    route_queries,
    router_outcomes,
    save_embeddings,
)
from corl_graph.evaluation._suite import pgr_summary
from corl_graph.experts import OutcomeTable, PriceSheet
from corl_graph.policies import CascadeRouter

N = 160
PRICES = {"a": PriceSheet(0.1, 0.1), "b": PriceSheet(1.0, 1.0), "c": PriceSheet(10.0, 10.0)}


def _world(seed: int = 0, *, dominated: bool = False) -> tuple[OutcomeTable, dict]:
    """Queries of two kinds (two embedding clusters). Cheap "a" is right on 95% of the easy
    ones, "c" on 75% of them and on 95% of the hard ones, where "a" never is: calling "a"
    first and "c" only when "a" looks wrong beats "c" alone. ``dominated``: "c" is always right and
    "a"/"b" never, so no cascade can beat calling "c"."""
    rng = np.random.default_rng(seed)
    rows, emb = [], {}
    centres = rng.normal(size=(2, 384))
    for i in range(N):
        easy = i % 2 == 0
        q = f"q{i:03d}"
        v = centres[0 if easy else 1] + 0.3 * rng.normal(size=384)
        emb[q] = v / np.linalg.norm(v)
        ok = {
            "a": easy and rng.random() < 0.95,
            "b": rng.random() < (0.85 if easy else 0.5),
            "c": rng.random() < (0.75 if easy else 0.95),
        }
        if dominated:
            ok = {"a": False, "b": False, "c": True}
        for m, right in ok.items():
            ans = "7" if right else f"w{m}{rng.integers(3)}"
            out = 20 if m != "a" or easy else 60
            rows.append(dict(
                query_id=q, split="train" if i < 120 else "test", model=m, correct=float(right),
                answer=ans, reference="7", prompt=f"question {i}", response=f"so {ans}",
                input_tokens=100, output_tokens=out, cost_usd=PRICES[m].cost(100, out),
            ))  # fmt: skip
    return OutcomeTable.from_rows(rows, prices=PRICES, name="world"), emb


def _fit(table: OutcomeTable, emb: dict) -> tuple[CascadeRouter, object]:
    setup = resolve_pool(table)
    router = fit_router(table, setup.experts, setup.tiers, emb, controller=setup.controller,
                        config=RouterFitConfig(seed=1))  # fmt: skip
    return router, setup


def test_graph_and_simulation_take_the_same_decisions(tmp_path):
    table, emb = _world()
    router, setup = _fit(table, emb)
    router = CascadeRouter.load(router.save(tmp_path / "r"))  # what eval runs: the saved one
    ids = sorted(q for q in table.queries if table.queries[q].split == "test")
    points = [(t, router.spec.tiers[t]) for t in setup.tiers]
    points += [(list(setup.tiers)[-1], p) for p in router.spec.sweep[:4]]
    for tier, point in points:
        cap = setup.tiers[tier].max_usd_per_query
        correct, cost, calls = router_outcomes(router, table, setup.experts, ids, emb, point, cap)
        out = asyncio.run(route_queries(table, setup.experts, router.at(point), setup.tiers, tier,
                                        query_ids=ids, features=emb))  # fmt: skip
        assert [o.correct for o in out] == pytest.approx(list(correct))
        assert [o.cost_usd for o in out] == pytest.approx(list(cost))
        assert [o.expert_calls for o in out] == list(calls)
        assert all(c <= cap + 1e-12 for c in cost)


def test_router_cascades_where_agreement_pays_and_falls_back_where_it_cannot():
    table, emb = _world()
    router, _ = _fit(table, emb)
    high = router.spec.tiers["high"]
    assert len(high.cascade) >= 2 and not high.fallback  # a then escalate on disagreement
    table2, emb2 = _world(dominated=True)
    router2, _ = _fit(table2, emb2)
    for point in router2.spec.tiers.values():
        if router2.spec.experts[point.cascade[-1]] == "c":
            assert point.fallback and point.cascade == (router2.spec.experts.index("c"),)


def test_load_rejects_a_folder_without_a_router(tmp_path):
    with pytest.raises(DataFormatError):
        CascadeRouter.load(tmp_path)


def test_pgr_summary_by_hand():
    # PGR 0 at no strong calls, 0.6 at 40%, 1.0 at 100%: CPT(50%) = 0.4, CPT(80%) = 1.0
    s = pgr_summary([(0.0, 0.0), (0.4, 0.6), (1.0, 1.0)])
    assert s["cpt50"] == pytest.approx(0.4) and s["cpt80"] == pytest.approx(1.0)
    assert s["apgr"] == pytest.approx((40 * 0 + 60 * 0.6 + 1.0) / 101)


def test_fit_and_eval_cli_on_any_table(tmp_path, capsys):
    table, emb = _world()
    path = table.restrict(["a", "c"], name="pair").save(tmp_path / "pair.jsonl.gz")
    save_embeddings(tmp_path / "emb.npz", emb)
    assert main(["fit", str(path), "--out", str(tmp_path / "router"),
                 "--embeddings", str(tmp_path / "emb.npz")]) == 0  # fmt: skip
    assert "wrote" in capsys.readouterr().out
    code = main(["eval", str(path), "--policy", str(tmp_path / "router"), "--out",
                 str(tmp_path / "res"), "--embeddings", str(tmp_path / "emb.npz")])  # fmt: skip
    assert code == 0
    res = json.loads((tmp_path / "res" / "replay_pair.json").read_text())
    assert res["pool"] == ["a", "c"]
    for family in ("single", "knn", "mlp", "mf", "oracle", "neural", "cascade"):
        assert family in res["aiq"], family
    assert isinstance(res["gap_closed"], float)
    assert set(res["routing_vs_2models"]["neural"]) == {"cpt50", "cpt80", "apgr"}
    assert all(r["cap_violations"] == 0 for r in res["rows"])
    assert sum(r["family"] == "knn" and r["role"] == "sweep" for r in res["rows"]) >= 20
    emb_file = str(tmp_path / "emb.npz")
    code = main(["eval", str(path), "--policy", str(tmp_path / "router"), "--out",
                 str(tmp_path / "sim"), "--embeddings", emb_file, "--simulate"])  # fmt: skip
    assert code == 0
    sim = json.loads((tmp_path / "sim" / "replay_pair.json").read_text())
    assert {r["via"] for r in sim["rows"]} == {"sim"}
    neural = [r for r in sim["rows"] if r["family"] == "neural" and r["role"] == "tier"]
    graph = [r for r in res["rows"] if r["family"] == "neural" and r["role"] == "tier"]
    assert [r["accuracy"] for r in neural] == pytest.approx([r["accuracy"] for r in graph])
