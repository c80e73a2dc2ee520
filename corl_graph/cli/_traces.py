"""``corl-graph traces prepare``: recorded runs to a training set (replay cache, query set,
labels, coverage). Torch is not imported: preparing runs anywhere the store is readable.

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
    return p


def run(args: argparse.Namespace) -> int:
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
