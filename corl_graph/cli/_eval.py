"""``corl-graph eval``: the replay benchmark on any table in the canonical format."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from corl_graph._exceptions import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="replay benchmark: baselines and a neural policy per tier, JSON + Pareto plot",
        description="Route a table's test split through the graph with replayed experts, per "
        "tier, for every single model, the controller alone, random at matched cost, the "
        "oracle, kNN and threshold routers and (with --policy) a trained neural policy.",
    )
    p.add_argument("table", help="outcome table NAME.jsonl.gz (NAME.models.json beside it)")
    p.add_argument("--policy", help="neural policy weights (path without .npz/.json)")
    p.add_argument("--pool", help="comma-separated models (default: the table's preset)")
    p.add_argument("--controller", help="controller model (default: the preset's)")
    p.add_argument("--caps", help="tiers as name=usd,... (default: the preset's)")
    p.add_argument("--embeddings", help="precomputed embeddings .npz (else computed, cached)")
    p.add_argument("--out", default="eval_results", help="folder for JSON and PNG")
    p.add_argument("--limit", type=int, help="only the first N test queries")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--no-sweeps", action="store_true", help="skip the AIQ sweeps")


def _setup(args: argparse.Namespace) -> tuple[Any, ...]:
    from corl_graph.budget import BudgetTier, TierSet
    from corl_graph.evaluation import PRESETS, TablePreset, preset_experts
    from corl_graph.experts import OutcomeTable

    table = OutcomeTable.load(args.table)
    preset = PRESETS.get(table.name)
    if preset is None and not (args.pool and args.caps):
        raise ConfigError(f"table {table.name!r} has no preset: pass --pool and --caps")
    pool = tuple(args.pool.split(",")) if args.pool else preset.pool  # type: ignore[union-attr]
    caps: tuple[tuple[str, float], ...]
    if args.caps:
        try:
            caps = tuple((n, float(v)) for n, v in (c.split("=") for c in args.caps.split(",")))
        except ValueError as exc:
            raise ConfigError(f"--caps must look like low=0.001,high=0.01: {exc}") from exc
    else:
        caps = preset.caps  # type: ignore[union-attr]
    controller = args.controller or (preset.controller if preset else pool[0])
    chosen = TablePreset(
        table.name, pool, controller, caps, preset.max_output_tokens if preset else None
    )
    tiers = TierSet([BudgetTier(n, c) for n, c in caps])
    return table, preset_experts(table, chosen), tiers, controller


def run(args: argparse.Namespace) -> int:
    from corl_graph.evaluation import run_benchmark, table_embeddings, write_plot
    from corl_graph.policies import NeuralPolicy

    table, experts, tiers, controller = _setup(args)
    emb = table_embeddings(table, path=args.embeddings)
    neural = NeuralPolicy.load(args.policy) if args.policy else None
    res = asyncio.run(
        run_benchmark(
            table,
            experts,
            tiers,
            controller,
            emb,
            neural,
            concurrency=args.concurrency,
            limit=args.limit,
            sweeps=not args.no_sweeps,
        )
    )
    out = Path(args.out)
    res.save(out / f"replay_{table.name}.json")
    write_plot(res, out / f"replay_{table.name}.png")
    print(format_rows(res.rows, roles=("single", "tier")))
    print("AIQ: " + ", ".join(f"{k} {v:.3f}" for k, v in res.aiq.items()))
    print(f"wrote {out}/replay_{table.name}.json and .png ({res.seconds:.0f}s)")
    return 0


def format_rows(rows: list[dict[str, Any]], roles: tuple[str, ...]) -> str:
    head = (
        f"{'policy':<52} {'tier':<7} {'acc':>6} {'mean $':>9} {'p95 $':>9} "
        f"{'call%':>6} {'calls/q':>7} {'viol':>4}"
    )
    lines = [head]
    for r in rows:
        if r["role"] in roles:
            lines.append(
                f"{r['policy'][:52]:<52} {r['tier']:<7} {r['accuracy']:>6.3f} "
                f"{r['mean_cost_usd']:>9.2e} {r['p95_cost_usd']:>9.2e} "
                f"{100 * r['expert_call_ratio']:>5.0f}% {r['calls_per_query']:>7.2f} "
                f"{r['cap_violations']:>4}"
            )
    return "\n".join(lines)
