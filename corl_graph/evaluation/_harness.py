"""Run policies through the real graph on replayed experts, and score every query.

>>> import asyncio
>>> from corl_graph.experts import OutcomeTable, PriceSheet, replay_experts
>>> from corl_graph.policies import ControllerOnly
>>> from corl_graph.budget import BudgetTier, TierSet
>>> table = OutcomeTable.from_rows(
...     [dict(query_id="q1", split="test", model="m", correct=1.0, answer="4", reference="4",
...           input_tokens=10, output_tokens=2, cost_usd=1e-6)], prices={"m": PriceSheet(0.1, 0.1)})
>>> m = asyncio.run(evaluate_policy(table, replay_experts(table), ControllerOnly("m"),
...                                 TierSet([BudgetTier("low", 1e-3)]), "low"))
>>> m.accuracy, m.cap_violations
(1.0, 0)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from corl_graph._exceptions import ConfigError
from corl_graph.budget import InMemoryLedger, TenantBudget, TierSet
from corl_graph.evaluation._metrics import QueryOutcome, TierMetrics, summarize
from corl_graph.experts import OutcomeTable, ReplayExpert, normalize_answer
from corl_graph.graph import Router, RouterConfig, RouteResult
from corl_graph.policies import Policy

__all__ = ["evaluate_policy", "judge", "route_queries", "test_queries"]


def test_queries(table: OutcomeTable, split: str = "test") -> list[str]:
    ids = sorted(q for q, info in table.queries.items() if info.split == split)
    if not ids:
        raise ConfigError(f"table {table.name!r} has no {split!r} queries")
    return ids


def judge(result: RouteResult, table: OutcomeTable, experts: Mapping[str, ReplayExpert]) -> float:
    """Correctness of a routed answer. The reply it came from is the last successful call
    whose answer (or text) it is. A reply whose row records no text is judged by that row's
    recorded score (there is nothing to compare); else the normalised final answer against
    the reference when both exist; else the reply's recorded score; 0 for no answer."""
    answer = result.answer
    if answer is None or not answer.strip():
        return 0.0
    norm = normalize_answer(answer)
    source = None
    for call in reversed(result.calls):
        if call.status != "ok" or call.expert not in experts:
            continue
        same_answer = call.answer is not None and normalize_answer(call.answer) == norm
        if same_answer or call.text == answer:
            source = table.outcome(result.query_id, experts[call.expert].model)
            break
    if source is not None and not source.has_text:
        return source.correct
    reference = table.queries[result.query_id].reference
    if reference is not None:
        return float(norm == normalize_answer(reference))
    return source.correct if source is not None else 0.0


def _outcome(
    result: RouteResult,
    table: OutcomeTable,
    experts: Mapping[str, ReplayExpert],
    controller: str | None,
) -> QueryOutcome:
    reached = [c for c in result.calls if c.status != "denied"]
    return QueryOutcome(
        query_id=result.query_id,
        correct=judge(result, table, experts),
        cost_usd=result.cost_usd,
        expert_calls=len(reached),
        escalated=any(c.expert != controller for c in reached),
        budget_exhausted=result.budget_exhausted,
        answer=result.answer,
        answer_source=result.answer_source,
        format_errors=len(result.format_errors),
    )


async def route_queries(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    policy: Policy,
    tiers: TierSet,
    tier: str,
    *,
    query_ids: Sequence[str] | None = None,
    features: Mapping[str, np.ndarray] | None = None,
    controller: str | None = None,
    concurrency: int = 64,
    on_done: Callable[[], None] | None = None,
) -> list[QueryOutcome]:
    """Route each query through a fresh ``Router`` (its own in-memory ledger), concurrently;
    ``on_done`` is called after each query (a progress bar)."""
    ids = list(query_ids) if query_ids is not None else test_queries(table)
    ledger = InMemoryLedger(default_budget=TenantBudget("*", 1e12, "total"))
    router = Router(
        RouterConfig(
            experts=list(experts),
            policy=policy,
            tiers=tiers,
            ledger=ledger,
            default_tier=tier,
            fallback_expert=controller or "cheapest",
        )
    )
    by_name = {e.name: e for e in experts}
    gate = asyncio.Semaphore(concurrency)

    async def one(qid: str) -> QueryOutcome:
        vec = None if features is None else [float(x) for x in features[qid]]
        async with gate:
            result = await router.arun(
                table.queries[qid].prompt or qid, tier=tier, query_id=qid, features=vec
            )
        if on_done is not None:
            on_done()
        return _outcome(result, table, by_name, controller)

    return list(await asyncio.gather(*(one(q) for q in ids)))


async def evaluate_policy(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    policy: Policy,
    tiers: TierSet,
    tier: str,
    **kwargs: object,
) -> TierMetrics:
    """``route_queries`` then ``summarize``: one policy on one tier."""
    outcomes = await route_queries(table, experts, policy, tiers, tier, **kwargs)  # type: ignore[arg-type]
    return summarize(outcomes, policy=policy.name, tier=tier, cap_usd=tiers[tier].max_usd_per_query)
