"""``corl-graph demo``: route the bundled GSM8K queries at every tier, offline, and report."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from corl_graph.cli._progress import Progress
from corl_graph.data import DEMO_CONTROLLER, DEMO_MODELS, demo_experts, demo_tiers, load_demo_table
from corl_graph.policies import Cascade, ControllerOnly, Policy

if TYPE_CHECKING:
    from corl_graph.evaluation import TierMetrics

__all__ = ["add_parser", "run", "run_demo"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="route the bundled GSM8K queries at low / medium / high with replayed LLMs",
        description="Offline main job: route the bundled test queries through the graph at every "
        "tier with replayed real-LLM outcomes, then print accuracy, cost, expert-call ratio and "
        "cap violations per tier.",
    )
    p.add_argument("--limit", type=int, default=None, help="route only the first N test queries")
    p.add_argument("--concurrency", type=int, default=64, help="queries in flight at once")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def demo_policies() -> list[tuple[Policy, tuple[str, ...] | None]]:
    """What the demo compares, and on which tiers (None = all): the routing policy, and the
    controller alone, whose one small call fits every cap, so it runs on the low tier only."""
    # The learned cascade router fitted by `corl-graph fit` on the bundled table's train
    # split with this pool and these tiers (corl_graph/evaluation/_bundled.py); it reads the
    # shipped query embeddings (numbers only).
    from corl_graph.evaluation import load_bundled_router

    return [
        (load_bundled_router(name="neural"), None),
        (
            Cascade(
                [m for m in DEMO_MODELS if m != DEMO_CONTROLLER],
                agree=2,
                name="cascade(llama-8b>4o-mini>4o>o1-mini)",
            ),
            None,
        ),
        (ControllerOnly(DEMO_CONTROLLER), ("low",)),
    ]


async def run_demo(limit: int | None = None, concurrency: int = 64) -> list[TierMetrics]:
    """Every demo policy on its tiers, through the evaluation harness (same metrics as
    ``corl-graph eval``)."""
    from corl_graph.evaluation import load_bundled_embeddings, route_queries, summarize

    table = load_demo_table()
    query_ids = sorted(q.query_id for q in table.split("test"))[:limit]
    tiers = demo_tiers()
    embeddings = load_bundled_embeddings()
    plan = [(policy, only or tuple(tiers)) for policy, only in demo_policies()]
    progress = Progress(len(query_ids) * sum(len(t) for _, t in plan), "routing")
    reports = []
    for policy, tier_names in plan:
        for tier in tier_names:
            outcomes = await route_queries(
                table,
                demo_experts(table),
                policy,
                tiers,
                tier,
                query_ids=query_ids,
                features=embeddings,
                controller=DEMO_CONTROLLER,
                concurrency=concurrency,
                on_done=progress.advance,
            )
            cap = tiers[tier].max_usd_per_query
            reports.append(summarize(outcomes, policy=policy.name, tier=tier, cap_usd=cap))
    return reports


def format_table(reports: Sequence[TierMetrics]) -> str:
    w = max([len(r.policy) for r in reports] + [6])
    head = (
        f"{'policy':<{w}} {'tier':<6} {'cap $':>8} {'acc':>6} {'mean $':>9} {'p95 $':>9} "
        f"{'call%':>6} {'calls/q':>7} {'viol':>4}"
    )
    lines = [head, "-" * len(head)]
    for r in reports:
        lines.append(
            f"{r.policy:<{w}} {r.tier:<6} {r.cap_usd:>8.4f} {r.accuracy:>6.3f} "
            f"{r.mean_cost_usd:>9.2e} {r.p95_cost_usd:>9.2e} {r.expert_call_ratio:>6.1%} "
            f"{r.calls_per_query:>7.2f} {r.cap_violations:>4}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    reports = asyncio.run(run_demo(args.limit, args.concurrency))
    if args.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        print(format_table(reports))
        n = reports[0].queries if reports else 0
        print(
            f"\n{n} GSM8K test queries per tier, replayed outcomes of {len(DEMO_MODELS)} real "
            f"LLMs, {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )
    return 1 if any(r.cap_violations for r in reports) else 0
