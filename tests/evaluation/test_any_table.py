"""Any table in the canonical format: derived pools, rows without text, zero recorded tokens,
tiers derived from the table, and ``corl-graph eval`` on such a table with no preset."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier, TierSet
from corl_graph.cli import main
from corl_graph.evaluation import (
    derive_tiers,
    episode_arrays,
    evaluate_policy,
    parse_tiers,
    resolve_pool,
    save_embeddings,
)
from corl_graph.evaluation._pool import pareto_pool
from corl_graph.experts import ExpertRequest, OutcomeTable, PriceSheet, ReplayExpert
from corl_graph.policies import AlwaysExpert


def _table(n: int = 40) -> OutcomeTable:
    """Three models: cheap "a" right on even queries, mid "b" on multiples of 3, strong "c"
    on all but every fifth; half train, half test."""
    rows = []
    prices = {"a": PriceSheet(0.1, 0.1), "b": PriceSheet(1.0, 1.0), "c": PriceSheet(10.0, 10.0)}
    for i in range(n):
        for m, ok in (("a", i % 2 == 0), ("b", i % 3 == 0), ("c", i % 5 != 0)):
            ans = str(i) if ok else "wrong"
            rows.append(
                dict(query_id=f"q{i:02d}", split="train" if i < n // 2 else "test", model=m,
                     correct=float(ok), answer=ans, reference=str(i), prompt=f"question {i}",
                     response=f"the answer is {ans}", input_tokens=100, output_tokens=10,
                     cost_usd=110 * prices[m].input_usd_per_mtok / 1e6)
            )  # fmt: skip
    return OutcomeTable.from_rows(rows, prices=prices, name="three")


def test_restrict_and_save_round_trip(tmp_path):
    t = _table().restrict(["a", "c"], drop_text=True, zero_tokens=True, name="ac")
    path = t.save(tmp_path / "ac.jsonl.gz")
    back = OutcomeTable.load(path)
    assert back.name == "ac" and back.models == ["a", "c"]
    o = back.outcome("q00", "c")
    assert (o.answer, o.response, o.input_tokens, o.output_tokens) == (None, None, 0, 0)
    assert o.cost_usd == pytest.approx(110 * 10 / 1e6) and not o.has_text
    assert back.queries["q00"].prompt is None and back.queries["q00"].reference == "0"
    with pytest.raises(ConfigError, match="unknown model"):
        _table().restrict(["zzz"])


def test_zero_tokens_reserve_the_priciest_recorded_call():
    t = _table().restrict(drop_text=True, zero_tokens=True)
    e = ReplayExpert(t, "c")
    assert e.max_output_tokens == 1
    assert e.worst_case(ExpertRequest("q01", "", ""))[1] == pytest.approx(t.max_cost("c"))


def test_rows_without_text_are_judged_by_their_recorded_score():
    t = _table().restrict(drop_text=True, zero_tokens=True)
    experts = [ReplayExpert(t, m) for m in t.models]
    tiers = TierSet([BudgetTier("high", 1.0)])
    ids = sorted(q for q in t.queries if t.queries[q].split == "test")
    m = asyncio.run(evaluate_policy(t, experts, AlwaysExpert(["c"]), tiers, "high", query_ids=ids))
    expected = np.mean([t.outcome(q, "c").correct for q in ids])
    assert m.accuracy == pytest.approx(expected) and m.accuracy > 0.5
    a = episode_arrays(t, experts, ids)
    assert a.textless.all() and a.replied.all()


def test_derived_tiers_follow_the_documented_rule():
    t = _table()
    setup = resolve_pool(t)
    assert setup.pool == ["a", "b", "c"] and setup.controller == "a" and setup.derived_tiers
    tiers = derive_tiers(t, setup.experts, "a")
    c_min, c_max = 110 * 0.1 / 1e6, 110 * 10 / 1e6
    mid = math.sqrt(c_min * c_max)  # = b's cost: low affords a and b
    assert tiers["low"].max_usd_per_query == pytest.approx(110 * 1.0 / 1e6, rel=0.01)
    assert tiers["low"].target_usd_per_query is None  # no model above mid is afforded
    assert tiers["medium"].max_usd_per_query == pytest.approx(c_max, rel=0.01)
    assert tiers["medium"].target_usd_per_query == pytest.approx(math.sqrt(mid * c_max), rel=0.05)
    assert tiers["high"].max_usd_per_query == pytest.approx(2 * c_max, rel=0.01)


def test_two_model_table_gets_a_spend_target_on_low():
    t = _table().restrict(["a", "c"])
    tiers = resolve_pool(t).tiers
    low = tiers["low"]
    assert low.max_usd_per_query >= 110 * 10 / 1e6  # both models affordable
    mid = math.sqrt(110 * 0.1 * 110 * 10) / 1e6
    assert low.target_usd_per_query == pytest.approx(mid, rel=0.05)


def test_parse_tiers_and_pool_errors():
    tiers = parse_tiers("low=0.001:0.0004,high=0.01")
    assert tiers["low"].target_usd_per_query == 0.0004 and tiers["high"].max_usd_per_query == 0.01
    for bad in ("low", "low=x", "low=0.001:0.01"):
        with pytest.raises(ConfigError):
            parse_tiers(bad)
    with pytest.raises(ConfigError, match="not in table"):
        resolve_pool(_table(), pool=["a", "nope"])
    with pytest.raises(ConfigError, match="not in the pool"):
        resolve_pool(_table(), pool=["b", "c"], controller="a")
    assert resolve_pool(_table(), pool=["c", "b"]).controller == "b"


def test_pareto_pool_drops_dominated_models():
    rows = []
    prices = {m: PriceSheet(p, p) for m, p in (("a", 0.1), ("b", 1.0), ("c", 10.0), ("d", 5.0))}
    for i in range(10):
        for m, ok in (("a", i < 5), ("b", i < 4), ("c", True), ("d", i < 8)):
            cost = prices[m].cost(10, 0)
            rows.append(dict(query_id=f"q{i}", split="train", model=m, correct=float(ok),
                             input_tokens=10, output_tokens=0, cost_usd=cost))  # fmt: skip
    t = OutcomeTable.from_rows(rows, prices=prices)
    experts = [ReplayExpert(t, m) for m in t.models]
    assert [e.name for e in pareto_pool(t, experts, 3)] == ["a", "d", "c"]  # b: a is better
    assert [e.name for e in pareto_pool(t, experts, 12)] == ["a", "b", "d", "c"]  # next front
    assert [e.name for e in pareto_pool(t, experts, 2)] == ["d", "c"]


def test_eval_cli_on_a_table_without_text_or_tokens(tmp_path, capsys):
    t = _table().restrict(drop_text=True, zero_tokens=True, name="bare")
    path = t.save(tmp_path / "bare.jsonl.gz")
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(t.queries), 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    save_embeddings(tmp_path / "emb.npz", dict(zip(sorted(t.queries), vectors, strict=True)))
    code = main(["eval", str(path), "--embeddings", str(tmp_path / "emb.npz"),
                 "--out", str(tmp_path / "out"), "--no-sweeps"])  # fmt: skip
    assert code == 0
    res = json.loads((tmp_path / "out" / "replay_bare.json").read_text())
    assert res["pool"] == ["a", "b", "c"] and res["controller"] == "a"
    single = {r["policy"]: r["accuracy"] for r in res["rows"] if r["role"] == "single"}
    assert single["always(c)"] == pytest.approx(0.8) and single["always(a)"] == pytest.approx(0.5)
    assert all(r["cap_violations"] == 0 for r in res["rows"])
    cascade = [r for r in res["rows"] if r["family"] == "cascade" and r["tier"] == "low"]
    assert cascade and cascade[0]["accuracy"] > 0  # the controller is in the cascade
