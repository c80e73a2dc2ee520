"""Replay benchmark: the learned cascade router against every baseline, per table and pool.

    python benchmarks/bench_replay.py [NAME ...] [--pools full,preset] [--seeds 0,1,2]

For each table and pool ("full": every model of the table; "preset": the 6-model pool of
``corl_graph.evaluation.PRESETS``) and each seed: fit the router on the train split
(``corl-graph fit``'s code), then run the comparison on the test split (``corl-graph
eval``'s). Seed 0 runs everything, per-tier rows through the graph; the other seeds refit the
router and the baselines' predictors with other folds and initial weights and score them in
simulation (tested equal to the graph), for the spread; ``--sim-only`` simulates seed 0 too
(no controller-only, threshold, cascade or random rows). Writes
benchmarks/results/replay_NAME.json (full pool) and replay_NAME_preset.json, with the seed-0
rows, ``aiq`` and ``gap_closed``, and ``seeds`` / ``spread`` over all seeds, plus .png plots;
the router of seed 0 under benchmarks/results/policies/NAME[_preset]/. Embeddings are cached
under .cache/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

from corl_graph.cli._eval import format_rows
from corl_graph.cli._progress import Progress
from corl_graph.evaluation import (
    RouterFitConfig,
    fit_router,
    resolve_pool,
    run_benchmark,
    table_embeddings,
    write_plot,
)
from corl_graph.experts import OutcomeTable

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "data" / "outcomes"
TABLES = ("routerbench_arc", "routerbench_mbpp", "zeroeval_gsm8k")


def bench(
    table: OutcomeTable,
    emb: dict,
    pool: str,
    seeds: list[int],
    sim_only: bool,
    results: Path = ROOT / "results",
    save_router: bool = True,
) -> None:
    setup = resolve_pool(table, preset=pool == "preset")
    suffix = "" if pool == "full" else f"_{pool}"
    per_seed = []
    main_res = None
    for seed in seeds:
        t0 = time.perf_counter()
        bar: list[Progress] = []

        label = f"{table.name}{suffix} seed {seed}: fit"

        def on_progress(
            done: int, total: int, bar: list[Progress] = bar, label: str = label
        ) -> None:
            if not bar:
                bar.append(Progress(total, label))
            bar[0].advance(done - bar[0].done)

        router = fit_router(
            table, setup.experts, setup.tiers, emb, controller=setup.controller,
            config=RouterFitConfig(seed=seed), on_progress=on_progress,
        )  # fmt: skip
        fit_s = time.perf_counter() - t0
        if seed == seeds[0] and save_router:
            router.save(results / "policies" / f"{table.name}{suffix}")
        res = asyncio.run(
            run_benchmark(
                table,
                setup.experts,
                setup.tiers,
                setup.controller,
                emb,
                router,
                seed=seed,
                graph=seed == seeds[0] and not sim_only,
            )
        )
        per_seed.append({"seed": seed, "aiq": res.aiq, "gap_closed": res.gap_closed,
                         "fit_seconds": fit_s, "eval_seconds": res.seconds,
                         "routing_vs_2models": res.routing_vs_2models,
                         "tiers": [r for r in res.rows if r["family"] == "neural"
                                   and r["role"] == "tier"]})  # fmt: skip
        print(f"{table.name}{suffix} seed {seed}: fit {fit_s:.0f}s, eval {res.seconds:.0f}s, "
              f"gap_closed {res.gap_closed}", file=sys.stderr, flush=True)  # fmt: skip
        if main_res is None:
            main_res = res
    assert main_res is not None
    main_res.fitted["seeds"] = per_seed
    families = sorted({f for s in per_seed for f in s["aiq"]})
    spread = {}
    for f in families:
        vals = [s["aiq"][f] for s in per_seed if f in s["aiq"]]
        spread[f] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals), "n": len(vals)}
    gaps = [s["gap_closed"] for s in per_seed if s["gap_closed"] is not None]
    if gaps:
        spread["gap_closed"] = {"mean": statistics.fmean(gaps), "std": statistics.pstdev(gaps),
                                "n": len(gaps)}  # fmt: skip
    main_res.fitted["spread"] = spread
    out = results / f"replay_{table.name}{suffix}.json"
    main_res.save(out)
    write_plot(main_res, out.with_suffix(".png"))
    print(f"\n## {table.name} ({pool} pool, {len(setup.experts)} models)")
    print(format_rows(main_res.rows, roles=("single", "tier")))
    print("AIQ: " + ", ".join(f"{k} {v:.3f}" for k, v in main_res.aiq.items()))
    print(f"gap_closed: {main_res.gap_closed}; spread: {spread.get('gap_closed')}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tables", nargs="*", default=list(TABLES))
    parser.add_argument("--shared", default=str(SHARED))
    parser.add_argument("--pools", default="full,preset")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--sim-only", action="store_true", help="every row simulated (no per-tier graph runs)"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.tables:
        table = OutcomeTable.load(Path(args.shared) / f"{name}.jsonl.gz")
        emb = table_embeddings(table, cache_dir=ROOT.parent / ".cache")
        for pool in args.pools.split(","):
            if pool == "preset" and name not in TABLES:
                continue
            bench(table, emb, pool, seeds, args.sim_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
