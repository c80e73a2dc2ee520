"""Traces to a training set: replay cache, labels, coverage, CachedExpert hits and misses,
live calls under the training tenant's budget, and the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from traces_fixtures import recorded_store, toy_table

from corl_graph._exceptions import ConfigError, DataFormatError, ExpertError
from corl_graph.budget import InMemoryLedger, TenantBudget
from corl_graph.cli import main
from corl_graph.experts import CachedExpert, ExpertRequest, PriceSheet, ReplayExpert
from corl_graph.protocol import ExpertCall
from corl_graph.trajectories import (
    Trajectory,
    fit_prices,
    load_labels,
    load_prepared,
    prepare_traces,
)


@pytest.fixture()
def store_url(tmp_path: Path) -> str:
    return recorded_store(tmp_path, toy_table())


def test_prepare_builds_cache_queries_and_coverage(store_url: str, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        '{"query_id": "q0", "reference": "0"}\n{"query_id": "q1", "feedback": "bad"}\n'
    )
    prep = prepare_traces(store_url, tmp_path / "out", labels=labels)
    cov = prep.coverage
    assert (cov.trajectories, cov.queries, cov.experts) == (12, 8, ["cheap", "strong"])
    # every run reached one expert; all replies are cached
    assert cov.calls_seen == cov.calls_cached == 12
    assert (cov.pairs_cached, cov.pairs_total) == (12, 16)
    assert cov.pair_coverage == 0.75
    assert cov.queries_fully_covered == 4 and cov.rollouts_replayable == 12
    assert (cov.labelled_reference, cov.labelled_feedback) == (1, 1)
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {
        "replay_cache.jsonl",
        "queries.jsonl",
        "coverage.json",
        "manifest.json",
        "runs.jsonl",
    }
    rows = [json.loads(x) for x in (out / "queries.jsonl").read_text().splitlines()]
    q0 = next(r for r in rows if r["query_id"] == "q0")
    assert q0["reference"] == "0" and q0["runs"] == 2 and q0["tiers"] == ["low", "high"]


def test_the_prepared_folder_reads_back_with_fitted_prices(store_url: str, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"query_id": "q1", "feedback": "good"}\n')
    prep = prepare_traces(store_url, tmp_path / "out", labels=labels)
    back = load_prepared(tmp_path / "out")
    assert back.queries == prep.queries and back.labels == prep.labels
    assert len(back.cache) == len(prep.cache) and len(back.trajectories) == 12
    # every toy call has 20 input and 4 output tokens: one shape, so one price per token
    assert back.prices["cheap"]["input_usd_per_mtok"] == pytest.approx(1e-6 / 24 * 1e6)
    assert back.prices["strong"]["output_usd_per_mtok"] == pytest.approx(1e-4 / 24 * 1e6)
    with pytest.raises(ConfigError, match="traces prepare"):
        load_prepared(tmp_path)


def test_fit_prices_separates_input_and_output_prices() -> None:
    t = Trajectory("q", "low", "t", "q1")
    t.calls = [
        ExpertCall("e", "s", "ok", "x", None, i, o, (i * 0.5 + o * 2.0) / 1e6)
        for i, o in ((100, 10), (40, 30), (7, 90))
    ]
    price = fit_prices([t])["e"]
    assert price["input_usd_per_mtok"] == pytest.approx(0.5)
    assert price["output_usd_per_mtok"] == pytest.approx(2.0)
    assert price["max_output_tokens"] == 90


def test_labels_reject_bad_feedback(tmp_path: Path) -> None:
    bad = tmp_path / "l.jsonl"
    bad.write_text('{"query_id": "q0", "feedback": 3}\n')
    with pytest.raises(DataFormatError, match="feedback"):
        load_labels(bad)
    bad.write_text('{"reference": "1"}\n')
    with pytest.raises(DataFormatError, match="query_id"):
        load_labels(bad)


def test_cached_expert_hits_by_subquery_and_fails_typed_on_miss(store_url: str) -> None:
    prep = prepare_traces(store_url)
    strong = CachedExpert(prep.cache, "strong", PriceSheet(4.0, 4.0))
    hit = asyncio.run(strong.agenerate(ExpertRequest("q0", "x", "  what is 0 TIMES 3? ")))
    assert hit.text == "The answer is 0." and hit.cost_usd == pytest.approx(1e-4)
    with pytest.raises(ExpertError, match="not in cache"):  # q7 never went to strong
        asyncio.run(strong.agenerate(ExpertRequest("q7", "x", "What is 7 times 3?")))
    with pytest.raises(ExpertError, match="not in cache"):  # other wording, match=subquery
        asyncio.run(strong.agenerate(ExpertRequest("q0", "x", "compute 0*3")))
    by_query = CachedExpert(prep.cache, "strong", PriceSheet(4.0, 4.0), match="query")
    assert asyncio.run(by_query.agenerate(ExpertRequest("q0", "x", "compute 0*3"))).answer == "0"
    assert (strong.hits, strong.misses) == (1, 2)


def test_live_misses_are_charged_to_the_training_tenant_until_its_budget_ends(
    store_url: str,
) -> None:
    table = toy_table()
    prep = prepare_traces(store_url)
    ledger = InMemoryLedger()
    # worst case of one strong call ~ (20 + 4 tokens) * $4/Mtok ~ 1e-4: room for two calls
    asyncio.run(ledger.set_tenant(TenantBudget("training", 2.5e-4, "total")))
    live = ReplayExpert(table, "strong")
    expert = CachedExpert(prep.cache, "strong", live=live, on_miss="live", ledger=ledger)
    reqs = [ExpertRequest(q, "x", f"What is {q[1]} times 3?") for q in ("q5", "q6", "q7")]
    asyncio.run(expert.agenerate(reqs[0]))
    asyncio.run(expert.agenerate(reqs[0]))  # now cached: no second live call
    asyncio.run(expert.agenerate(reqs[1]))
    assert expert.live_calls == 2 and expert.hits == 1
    with pytest.raises(ExpertError, match="training budget"):
        asyncio.run(expert.agenerate(reqs[2]))
    spent = asyncio.run(ledger.tenant_spend("training"))
    assert expert.live_usd == pytest.approx(2e-4)
    assert (spent.settled_usd, spent.held_usd, spent.calls) == (pytest.approx(2e-4), 0.0, 2)


def test_cli_traces_prepare(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["traces", "prepare", "--store", store_url, "--out", str(tmp_path / "p"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pair_coverage"] == 0.75
    assert main(["traces", "prepare", "--store", str(tmp_path / "none.jsonl"), "--out", "x"]) == 2
