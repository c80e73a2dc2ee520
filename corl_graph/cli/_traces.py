"""``corl-graph traces record`` runs a baseline router over an outcome table's queries and
records every run to a trajectory store; ``corl-graph traces prepare`` turns recorded runs
into a training set (replay cache, query set, labels, coverage). Torch is not imported.

    corl-graph traces record --table T.jsonl.gz --experts A,B --policy cascade \
        --store sqlite:///runs.db --tiers low=0.002,high=0.05 --max-queries 200
    corl-graph traces prepare --store sqlite:///runs.db --out prepared/ --labels labels.jsonl
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "traces",
        help="turn recorded trajectories into a training set (replay cache + coverage)",
        description="Work with recorded trajectories (see docs/training.md, "
        "'Training on your own traces').",
    )
    sub = p.add_subparsers(dest="traces_command", metavar="ACTION", required=True)
    prep = sub.add_parser(
        "prepare",
        help="build the replay cache, the query set and a coverage report",
        description="Read a trajectory store and write OUT/replay_cache.jsonl, "
        "OUT/queries.jsonl, OUT/coverage.json and OUT/manifest.json.",
    )
    prep.add_argument("--store", required=True, help="sqlite:///runs.db, jsonl:///runs or x.jsonl")
    prep.add_argument("--out", required=True, help="output folder")
    prep.add_argument("--labels", help="JSONL of {query_id, reference?, feedback?, trajectory_id?}")
    prep.add_argument("--tier", help="only runs of this tier")
    prep.add_argument("--tenant", help="only runs of this tenant")
    prep.add_argument("--since", type=float, help="only runs created at or after (epoch s)")
    prep.add_argument("--until", type=float, help="only runs created before (epoch s)")
    prep.add_argument("--json", action="store_true", help="print the coverage report as JSON")
    rec = sub.add_parser(
        "record",
        help="run a baseline router over a table's queries and record the runs to a store",
        description="Route the queries of an outcome table (experts replayed) with a baseline "
        "policy under every tier and append each run's trajectory to --store, for "
        "corl-graph traces prepare.",
    )
    rec.add_argument("--table", required=True, help="outcome table, e.g. zeroeval_gsm8k.jsonl.gz")
    rec.add_argument("--experts", required=True, help="comma-separated models of the table")
    rec.add_argument(
        "--policy",
        default="cascade",
        help="cascade (cheapest first, escalate until two agree), always:NAME, or random",
    )
    rec.add_argument("--store", required=True, help="sqlite:///runs.db, jsonl:///runs or x.jsonl")
    rec.add_argument("--tiers", default="low=0.002,medium=0.01,high=0.05", help="NAME=CAP,...")
    rec.add_argument("--split", default="train", choices=["train", "test"])
    rec.add_argument("--max-queries", type=int, help="only the first N queries of the split")
    rec.add_argument("--tenant", default="recorded", help="tenant of the recorded runs")
    return p


def run(args: argparse.Namespace) -> int:
    if args.traces_command == "record":
        return _record(args)
    from corl_graph.trajectories import prepare_traces

    prepared = prepare_traces(
        args.store,
        args.out,
        labels=args.labels,
        tier=args.tier,
        tenant=args.tenant,
        since=args.since,
        until=args.until,
    )
    if args.json:
        print(json.dumps(prepared.coverage.as_dict(), indent=2))
    else:
        print(prepared.coverage.summary())
        print(f"written to {prepared.out_dir}")
    return 0


def _policy(spec: str, experts: list[str]) -> Any:
    from corl_graph._exceptions import ConfigError
    from corl_graph.policies import AlwaysExpert, Cascade, RandomRouter

    if spec == "cascade":
        return Cascade(experts)
    if spec == "random":
        return RandomRouter(experts, [1.0] * len(experts))
    kind, _, name = spec.partition(":")
    if kind == "always" and name in experts:
        return AlwaysExpert([name])
    raise ConfigError(
        f"--policy {spec!r}: choose cascade, random or always:NAME with NAME one of {experts}"
    )


def _record(args: argparse.Namespace) -> int:
    import asyncio

    from corl_graph._exceptions import ConfigError
    from corl_graph.budget import BudgetTier, InMemoryLedger, TenantBudget, TierSet
    from corl_graph.cli._train import parse_tiers
    from corl_graph.experts import OutcomeTable, ReplayExpert
    from corl_graph.graph import Router, RouterConfig
    from corl_graph.trajectories import open_store

    table = OutcomeTable.load(args.table)
    names = [e.strip() for e in args.experts.split(",") if e.strip()]
    unknown = [n for n in names if n not in table.prices]
    if unknown or not names:
        raise ConfigError(f"--experts {unknown or names}: not models of {args.table!r}")
    tiers = TierSet(BudgetTier(**t) for t in parse_tiers(args.tiers))
    queries = [q for q in table.split(args.split) if q.prompt][: args.max_queries]
    if not queries:
        raise ConfigError(f"{args.table!r} has no {args.split} queries with a prompt")
    store = open_store(args.store)
    router = Router(
        RouterConfig(
            experts=[ReplayExpert(table, n) for n in names],
            policy=_policy(args.policy, names),
            tiers=tiers,
            ledger=InMemoryLedger(default_budget=TenantBudget("*", 1e12, "total")),
            default_tier=next(iter(tiers)),
        ),
        trajectory_sink=store.append,
    )

    async def _all() -> int:
        runs = [
            router.arun(q.prompt or "", tier=t, query_id=q.query_id, tenant=args.tenant)
            for q in queries
            for t in tiers
        ]
        await asyncio.gather(*runs)
        return len(runs)

    n = asyncio.run(_all())
    print(f"recorded {n} runs ({len(queries)} queries x {len(tiers)} tiers) to {args.store}")
    return 0
