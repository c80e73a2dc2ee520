"""Replay benchmark: baselines and the neural policy on the recorded tables, per tier.

    python -m corl_graph.training.neural_ppo --table ../shared/data/outcomes/NAME.jsonl.gz \
        --out benchmarks/results/policies/NAME            # train (once per table)
    python benchmarks/bench_replay.py [NAME ...]          # evaluate through the graph

Writes benchmarks/results/replay_NAME.json and .png. Embeddings are cached under .cache/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from corl_graph.cli._eval import format_rows
from corl_graph.evaluation import (
    preset_experts,
    preset_for,
    run_benchmark,
    table_embeddings,
    write_plot,
)
from corl_graph.experts import OutcomeTable
from corl_graph.policies import NeuralPolicy

ROOT = Path(__file__).resolve().parent
SHARED = ROOT.parent.parent / "shared" / "data" / "outcomes"
TABLES = ("routerbench_arc", "routerbench_mbpp", "zeroeval_gsm8k")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tables", nargs="*", default=list(TABLES))
    parser.add_argument("--shared", default=str(SHARED))
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in args.tables:
        table = OutcomeTable.load(Path(args.shared) / f"{name}.jsonl.gz")
        preset = preset_for(name)
        emb = table_embeddings(table, cache_dir=ROOT.parent / ".cache")
        weights = ROOT / "results" / "policies" / name
        neural = NeuralPolicy.load(weights) if weights.with_suffix(".npz").is_file() else None
        res = asyncio.run(
            run_benchmark(
                table,
                preset_experts(table, preset),
                preset.tiers(),
                preset.controller,
                emb,
                neural,
                concurrency=args.concurrency,
            )
        )
        res.save(ROOT / "results" / f"replay_{name}.json")
        write_plot(res, ROOT / "results" / f"replay_{name}.png")
        print(f"\n## {name} ({res.seconds:.0f}s)")
        print(format_rows(res.rows, roles=("single", "tier")))
        print("AIQ: " + ", ".join(f"{k} {v:.3f}" for k, v in res.aiq.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
