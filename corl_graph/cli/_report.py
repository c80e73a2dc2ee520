"""``corl-graph report``: what recorded runs cost, per tier, expert and tenant.

corl-graph report runs/                       # a JSONL folder, a .jsonl file,
corl-graph report sqlite:///runs.db --json    # or a store URL
corl-graph report runs.jsonl --by tier,expert --tenant acme
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from corl_graph._exceptions import ConfigError, DataFormatError
from corl_graph.tracing import DEFAULT_SECTIONS, CostReport, ReportRow, summarize
from corl_graph.trajectories import Trajectory

__all__ = ["add_parser", "format_table", "run"]

_COLUMNS = (
    "queries",
    "ratio",
    "calls",
    "denied",
    "exhausted",
    "failed",
    "in_tok",
    "out_tok",
    "cost_usd",
    "usd/query",
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="summarise recorded runs: queries, expert calls, tokens, dollars, cap hits",
        description=(
            "Summarise recorded runs per tier, expert and tenant: queries, expert-call ratio, "
            "tokens, dollars and cap hits (denied calls; runs that ended budget_exhausted)."
        ),
    )
    p.add_argument(
        "store", help="trajectory store: a JSONL file or folder, jsonl:///…, sqlite:///…"
    )
    p.add_argument(
        "--by",
        action="append",
        metavar="DIMS",
        help="a grouping, e.g. tier or tier,expert (repeatable; default: tier, expert, tenant)",
    )
    p.add_argument("--tier", help="only runs of this tier")
    p.add_argument("--tenant", help="only runs of this tenant")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return p


def run(args: argparse.Namespace) -> int:
    sections = [s.split(",") for s in args.by] if args.by else DEFAULT_SECTIONS
    runs = _read(str(args.store), tier=args.tier, tenant=args.tenant)
    report = summarize(runs, sections)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_table(report))
    return 0


def _read(store: str, *, tier: str | None, tenant: str | None) -> Iterator[Trajectory]:
    """Runs from the trajectory store; a bare folder is taken as a JSONL store."""
    try:
        from corl_graph.trajectories import open_store
    except ImportError:  # the store module predates this command in some checkouts
        return _read_jsonl_fallback(Path(store), tier, tenant)
    if "://" not in store:
        path = Path(store)
        if not path.exists():
            raise ConfigError(
                f"no trajectory store at {store!r}: give a .jsonl file, a folder or a URL"
            )
        # Bare paths for convenience; three slashes then the path, absolute or relative.
        if path.is_dir():
            store = f"jsonl:///{path}"
        elif path.suffix in (".db", ".sqlite", ".sqlite3"):
            store = f"sqlite:///{path}"
    return open_store(store).iter(tier=tier, tenant=tenant)


def _read_jsonl_fallback(path: Path, tier: str | None, tenant: str | None) -> Iterator[Trajectory]:
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    for file in files:
        if not file.exists():
            raise ConfigError(f"no trajectory file at {file}")
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                record.pop("schema_version", None)
                t = Trajectory.from_dict(record)
            except (ValueError, TypeError, KeyError) as exc:
                raise DataFormatError(f"{file}:{n}: not a trajectory record: {exc}") from exc
            if (tier is None or t.tier == tier) and (tenant is None or t.tenant == tenant):
                yield t


def format_table(report: CostReport) -> str:
    """Plain-text tables, one per section, then the total."""
    blocks = []
    for name, rows in report.sections.items():
        blocks.append(_table(name.split(","), rows))
    blocks.append(_table(["total"], [report.total], label=("all",)))
    return "\n".join(blocks)


def _table(dims: Sequence[str], rows: Sequence[ReportRow], label: tuple[str, ...] = ()) -> str:
    header = [*dims, *_COLUMNS]
    body = [[*(label or r.key), *_cells(r)] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for cells in body:
        key_part = [c.ljust(w) for c, w in zip(cells[: len(dims)], widths, strict=False)]
        num_part = [
            c.rjust(w) for c, w in zip(cells[len(dims) :], widths[len(dims) :], strict=True)
        ]
        lines.append("  ".join(key_part + num_part))
    if not body:
        lines.append("(no runs)")
    return "\n".join(lines) + "\n"


def _cells(r: ReportRow) -> list[str]:
    return [
        str(r.queries),
        f"{r.expert_call_ratio:.2f}",
        str(r.expert_calls),
        str(r.denied_calls),
        str(r.budget_exhausted),
        str(r.failed_calls),
        str(r.input_tokens),
        str(r.output_tokens),
        f"{r.cost_usd:.6f}",
        f"{r.cost_per_query:.6f}",
    ]
