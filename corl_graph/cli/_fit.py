"""``corl-graph fit``: fit the learned cascade router on any table in the canonical format.

    corl-graph fit TABLE.jsonl.gz --out DIR [--pool a,b,c] [--controller M] [--tiers ...]
    corl-graph eval TABLE.jsonl.gz --policy DIR

Pool, controller and tiers follow the same rules as ``corl-graph eval`` (every model, the
cheapest, derived from the costs) and are saved with the router, so ``eval --policy DIR``
runs on the pool and tiers it was fitted for. Numpy only: no torch, no GPU."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from corl_graph._exceptions import ConfigError
from corl_graph.cli._eval import add_pool_arguments, pool_setup
from corl_graph.cli._progress import Progress

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "fit",
        help="fit the learned cascade router on a table's train split (numpy, minutes)",
        description="Fit the learned cascade router (ordered cascades with learned stopping, "
        "per-tier operating points chosen by cross-validation on train, falling back to the "
        "best single model where routing does not beat it) on TABLE's train split.",
    )
    p.add_argument("table", help="outcome table NAME.jsonl.gz (NAME.models.json beside it)")
    p.add_argument("--out", required=True, help="folder for router.json and router.npz")
    add_pool_arguments(p)
    p.add_argument("--embeddings", help="precomputed embeddings .npz (else computed, cached)")
    p.add_argument("--seed", type=int, default=0, help="draws the cross-validation folds")
    p.add_argument("--max-candidates", type=int, default=12, help="experts after pruning")
    p.add_argument("--max-len", type=int, default=3, help="longest cascade (1-4)")


def run(args: argparse.Namespace) -> int:
    from corl_graph.evaluation import RouterFitConfig, fit_router, table_embeddings
    from corl_graph.experts import OutcomeTable

    if args.max_candidates < 1:
        raise ConfigError("--max-candidates must be >= 1")
    started = time.perf_counter()
    table = OutcomeTable.load(args.table)
    setup = pool_setup(args, table)
    emb = table_embeddings(table, path=args.embeddings)
    cfg = RouterFitConfig(max_candidates=args.max_candidates, max_len=args.max_len, seed=args.seed)
    progress: list[Progress] = []

    def on_progress(done: int, total: int) -> None:
        if not progress:
            progress.append(Progress(total, "fitting cascades"))
        progress[0].advance(done - progress[0].done)

    router = fit_router(
        table, setup.experts, setup.tiers, emb, controller=setup.controller, config=cfg,
        on_progress=on_progress, max_output_tokens=args.max_output_tokens,
    )  # fmt: skip
    out = router.save(Path(args.out))
    spec = router.spec
    print(f"pool: {len(setup.experts)} models; candidates after pruning: {len(spec.experts)}")
    for tier, point in spec.tiers.items():
        names = ">".join(spec.experts[i] for i in point.cascade)
        if point.fallback:
            kind = "single model (fallback)"
        elif point.route_weight is not None:
            kind = f"one call to the best estimate - {point.route_weight:.3g} x cost"
        else:
            kind = f"stop at p >= {point.theta:.2f}" + (", vote" if point.vote else "")
        cap = setup.tiers[tier].max_usd_per_query
        print(
            f"{tier:<8} cap ${cap:.2e}: {names} [{kind}] train acc {point.train_accuracy:.3f} "
            f"at ${point.train_cost_usd:.2e}/query (cross-validated)"
        )
    print(json.dumps({"cv_gain_over_single": spec.notes.get("cv_gain_over_single")}))
    print(f"wrote {out}/router.json and router.npz ({time.perf_counter() - started:.0f}s)")
    return 0
