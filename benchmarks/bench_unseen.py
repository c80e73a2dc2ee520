"""The "unseen table" checks: the replay benchmark on two tables derived from the visible ones.

    python benchmarks/bench_unseen.py [--seeds 0,1,2]

The tables the issue names (a 2-model strong/weak table, a 9-model table without text, ...)
are not in this repository's data, so two are derived with ``OutcomeTable.restrict``:
``gsm8k_9_notext`` (9 GSM8K models, text dropped and token counts zeroed: a numbers-only
table) and ``arc_strong_weak`` (mixtral vs gpt-4). Each runs through bench_replay.py's code
with its default pool, controller and tiers (no preset, no code change), every row
simulated, and writes benchmarks/results/unseen/replay_NAME.json and .png. They share
queries with the visible tables: a check of "any table, any pool", not of new queries.
The embeddings are the source table's (the no-text table has no prompts to embed).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench_replay import ROOT, SHARED, bench

from corl_graph.evaluation import table_embeddings
from corl_graph.experts import OutcomeTable

DERIVED: dict[str, tuple[str, tuple[str, ...], bool]] = {
    # name: (source table, pool, numbers only)
    "gsm8k_9_notext": (
        "zeroeval_gsm8k",
        (
            "gemma-2-2b-it",
            "gemini-1.5-flash",
            "deepseek-chat",
            "Meta-Llama-3.1-8B-Instruct",
            "gpt-4o-mini-2024-07-18",
            "Qwen2-72B-Instruct",
            "claude-3-haiku-20240307",
            "o1-mini-2024-09-12",
            "gpt-4o-2024-08-06",
        ),
        True,
    ),
    "arc_strong_weak": (
        "routerbench_arc",
        ("mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"),
        False,
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=list(DERIVED))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--shared", default=str(SHARED))
    parser.add_argument("--cache", default=str(ROOT.parent / ".cache"))
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in DERIVED]
    if unknown:
        parser.error(f"unknown derived table(s) {unknown}; choose from {', '.join(DERIVED)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.names:
        source, pool, numbers_only = DERIVED[name]
        full = OutcomeTable.load(Path(args.shared) / f"{source}.jsonl.gz")
        emb = table_embeddings(full, cache_dir=args.cache)
        table = full.restrict(pool, drop_text=numbers_only, zero_tokens=numbers_only, name=name)
        bench(table, emb, "full", seeds, True, ROOT / "results" / "unseen", save_router=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
