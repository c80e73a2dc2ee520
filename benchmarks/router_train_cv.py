"""Train-only check of the router's fitting procedure: outer folds over the TRAIN split.

    python benchmarks/router_train_cv.py TABLE [TABLE ...] [--folds 5] [--pools full|preset]
        [--set FIELD=VALUE ...]

For each table and each of ``--folds`` outer folds of its train split: fit the router
(``corl-graph fit``'s code, ``RouterFitConfig(seed=...)`` defaults) on the other folds and
score the held-out fold as if it were the test split (``corl-graph eval``'s comparison,
simulated rows only). The test split is never read. Per fold: the router's AIQ, the
single-model hull's, kNN's (k by 5-fold CV on the fitting folds), the oracle's,
``difference`` = router - max(hull, kNN) and ``gap_closed`` = difference / (oracle -
max(hull, kNN)); mean and population sd over the folds. This is the evidence model choices
rest on (issue 15: "choose everything on train"). ``--set FIELD=VALUE`` overrides a
``RouterFitConfig`` field (a variant under test; the entry records it under ``config``). Writes
benchmarks/results/router_train_cv.json (tables run before are kept; a rerun of a table and
pool replaces its entry). Embeddings are cached under .cache/ (``--cache``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from corl_graph.evaluation import (
    RouterFitConfig,
    fit_router,
    resolve_pool,
    run_benchmark,
    table_embeddings,
)
from corl_graph.experts import OutcomeTable, QueryInfo

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "data" / "outcomes"
OUT = ROOT / "results" / "router_train_cv.json"
FIGURES = ("neural", "hull", "knn", "oracle", "difference", "gap_closed")


def fold_table(table: OutcomeTable, held_out: set[str], train: list[str]) -> OutcomeTable:
    """The train split of ``table`` alone, ``held_out`` relabelled as its test split."""
    queries = {}
    for q in train:
        info = table.queries[q]
        split = "test" if q in held_out else "train"
        queries[q] = QueryInfo(q, split, info.task, info.prompt, info.reference)
    outcomes = {(q, m): table.outcome(q, m) for q in train for m in table.models}
    return OutcomeTable(queries, outcomes, table.prices, name=table.name)


def outer_folds(train: list[str], folds: int, seed: int) -> list[set[str]]:
    """``folds`` disjoint sets of train query ids of near-equal size, drawn with ``seed``."""
    assign = np.arange(len(train)) % folds
    np.random.default_rng(1000 + seed).shuffle(assign)
    return [{q for q, a in zip(train, assign, strict=True) if a == f} for f in range(folds)]


def run_fold(
    table: OutcomeTable, emb: dict, preset: bool, seed: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    setup = resolve_pool(table, preset=preset)
    t0 = time.perf_counter()
    router = fit_router(
        table, setup.experts, setup.tiers, emb, controller=setup.controller,
        config=RouterFitConfig(seed=seed, **overrides),
    )  # fmt: skip
    fit_s = time.perf_counter() - t0
    bench = run_benchmark(
        table, setup.experts, setup.tiers, setup.controller, emb, router, seed=seed, graph=False
    )
    res = asyncio.run(bench)
    base = max(res.aiq["single"], res.aiq["knn"])
    return {
        "neural": res.aiq["neural"],
        "hull": res.aiq["single"],
        "knn": res.aiq["knn"],
        "mf": res.aiq.get("mf"),
        "mlp": res.aiq.get("mlp"),
        "oracle": res.aiq["oracle"],
        "difference": res.aiq["neural"] - base,
        "gap_closed": res.gap_closed,
        "pool_size": len(setup.experts),
        "fit_seconds": round(fit_s, 1),
        "eval_seconds": round(res.seconds, 1),
    }


def run_table(
    table: OutcomeTable, emb: dict, pool: str, folds: int, seed: int,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    train = sorted(q for q, info in table.queries.items() if info.split == "train")
    rows = []
    for f, held_out in enumerate(outer_folds(train, folds, seed)):
        row = run_fold(
            fold_table(table, held_out, train), emb, pool == "preset", seed, overrides or {}
        )
        row = {"fold": f, "n_fit": len(train) - len(held_out), "n_held_out": len(held_out), **row}
        rows.append(row)
        print(f"{table.name} {pool} fold {f}: fit {row['fit_seconds']:.0f}s, " + ", ".join(
            f"{k} {row[k]:+.4f}" if k == "difference" else f"{k} {row[k]:.4f}"
            for k in FIGURES if row[k] is not None), file=sys.stderr, flush=True)  # fmt: skip
    mean, sd = {}, {}
    for k in FIGURES:
        vals = [r[k] for r in rows if r[k] is not None]
        mean[k] = statistics.fmean(vals) if vals else None
        sd[k] = statistics.pstdev(vals) if vals else None
    return {"table": table.name, "pool": pool, "folds": rows, "mean": mean, "sd": sd}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tables", nargs="+")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--pools", choices=("full", "preset"), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", default=str(SHARED))
    parser.add_argument("--cache", default=str(ROOT.parent / ".cache"))
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a RouterFitConfig field (JSON value)")  # fmt: skip
    args = parser.parse_args()
    if args.folds < 2:
        parser.error("--folds must be at least 2")
    overrides = {}
    fields = {f.name for f in dataclasses.fields(RouterFitConfig)}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in fields or key == "seed":
            parser.error(f"--set {item!r}: expected FIELD=VALUE, FIELD one of {sorted(fields)}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
        if isinstance(overrides[key], list):
            overrides[key] = tuple(overrides[key])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from _machine import machine

    out = Path(args.out)
    found = json.loads(out.read_text()) if out.is_file() else {}
    results = found.get("results", {})
    for name in args.tables:
        table = OutcomeTable.load(Path(args.shared) / f"{name}.jsonl.gz")
        emb = table_embeddings(table, cache_dir=args.cache)
        key = name if args.pools == "full" else f"{name}_preset"
        res = run_table(table, emb, args.pools, args.folds, args.seed, overrides)
        results[key] = {**res, "n_folds": args.folds, "seed": args.seed}
        if overrides:
            results[key]["config"] = overrides
        m, s = res["mean"], res["sd"]
        print(f"{key}: difference {m['difference']:+.4f} ± {s['difference']:.4f}, gap closed "
              f"{m['gap_closed']:.3f} ± {s['gap_closed']:.3f}", flush=True)  # fmt: skip
    doc = {
        "what": "router fit on K-1 outer folds of the train split, scored on the held-out fold",
        "machine": machine(),
        "results": dict(sorted(results.items())),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
