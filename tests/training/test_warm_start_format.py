"""The documented warm start yields a tiny controller that speaks the protocol: per-tier
teachers chosen on train (``tier_teacher``), ``warm_start_examples`` + ``sft_warm_start``,
then the real graph on held-out queries, sampling at temperature 1 as training does."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

import pytest
from corl_graph.training import (
    ExpertStats,
    HFPolicy,
    tier_teacher,
)
from training_tasks import (
    FAST,
    SLOW,
    fast_slow_table,
    teacher_examples,
    warm_started_controller,
)

from corl_graph.budget import BudgetTier, TierSet
from corl_graph.evaluation import route_queries, summarize
from corl_graph.experts import OutcomeTable, ReplayExpert

SUBQUERY = "solve the query"


def test_tier_teacher_mixes_two_experts_at_the_target() -> None:
    stats = {"own": ExpertStats(0.0, 0.5), "cheap": ExpertStats(4e-5, 0.8)}
    stats["dear"] = ExpertStats(1e-3, 0.9)
    low = tier_teacher(stats, 1e-5)  # own 75%, cheap 25%: 0.5 + 0.25 * 0.3
    assert low.shares == pytest.approx({"own": 0.75, "cheap": 0.25})
    assert low.expected_cost_usd == pytest.approx(1e-5)
    assert low.expected_accuracy == pytest.approx(0.575)
    assert low.multiplier == pytest.approx(0.3 / 4)  # accuracy per target of spend
    rich = tier_teacher(stats, 2e-3)  # everything fits: the best expert, constraint slack
    assert rich.shares == {"dear": 1.0} and rich.multiplier == 0.0
    free = tier_teacher({"own": ExpertStats(0.0, 0.5)}, 1e-5)
    assert free.shares == {"own": 1.0}


def test_tier_teacher_names_an_unreachable_target() -> None:
    from corl_graph._exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"below every expert's mean cost.*'cheap' at \$4e-05"):
        tier_teacher({"cheap": ExpertStats(4e-5, 0.8)}, 1e-5)


def _toy_teachers(table: OutcomeTable) -> tuple[list[ReplayExpert], TierSet, dict[str, Any]]:
    experts = [ReplayExpert(table, m, max_output_tokens=8) for m in (FAST, SLOW)]
    tiers = TierSet(
        (
            BudgetTier("low", 1e-3, target_usd_per_query=1.2e-5),
            BudgetTier("high", 1e-3, target_usd_per_query=2.5e-4),
        )
    )
    train = table.split("train")
    stats = {
        m: ExpertStats(
            statistics.fmean(table.outcome(q.query_id, m).cost_usd for q in train),
            statistics.fmean(table.outcome(q.query_id, m).correct for q in train),
        )
        for m in (FAST, SLOW)
    }
    return experts, tiers, {n: tier_teacher(stats, tiers[n].target_usd) for n in tiers}


def test_teacher_examples_follow_each_tiers_teacher() -> None:
    table = fast_slow_table(64, n_train=48, name="toy_teacher_examples")
    experts, tiers, teachers = _toy_teachers(table)
    # The high target affords the slow expert on every query; the low one the fast expert
    # on 99% of them (its spend is 1.2e-5 against the fast expert's ~1e-5).
    assert dict(teachers["high"].shares) == {SLOW: 1.0}
    assert teachers["low"].shares[FAST] > 0.95
    _, _, examples = teacher_examples(table, experts, tiers, teachers)
    assert len(examples) == len(tiers) * len(table.split("train"))
    assert {e.source for e in examples if e.tier == "high"} == {f"teacher:{SLOW}"}
    low = [e.source for e in examples if e.tier == "low"]
    assert set(low) <= {f"teacher:{FAST}", f"teacher:{SLOW}"}
    assert low.count(f"teacher:{FAST}") >= 0.9 * len(low)


@pytest.mark.slow
def test_warm_started_tiny_model_writes_well_formed_actions(tmp_path: Path) -> None:
    table = fast_slow_table(64, n_train=48, name="toy_format")
    experts, tiers, teachers = _toy_teachers(table)
    lm, tok = warm_started_controller(table, experts, tiers, teachers, tmp_path / "warm", epochs=16)
    test_ids = [q.query_id for q in table.split("test")]
    errors, runs = 0, 0
    for tier in tiers:
        outcomes = []
        for seed in range(4):  # four samples of every held-out query, at temperature 1
            policy = HFPolicy(lm, tok, max_new_tokens=16, temperature=1.0, seed=seed)
            outcomes += asyncio.run(
                route_queries(table, experts, policy, tiers, tier, query_ids=test_ids)
            )
        m = summarize(outcomes, policy="warm", tier=tier, cap_usd=tiers[tier].max_usd_per_query)
        assert m.format_error_rate == pytest.approx(
            sum(o.format_errors > 0 for o in outcomes) / len(outcomes)
        )
        errors += sum(o.format_errors > 0 for o in outcomes)
        runs += len(outcomes)
    assert errors / runs < 0.02, f"{errors} of {runs} runs had a malformed turn"
