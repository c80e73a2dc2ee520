"""Exporting the audit trail to JSON Lines or CSV, for finance, billing or a data warehouse."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
from pathlib import Path
from typing import Literal

from corl_graph._exceptions import ConfigError
from corl_graph.budget._ledger import AuditEntry, Ledger

__all__ = ["export_audit"]

AuditFormat = Literal["jsonl", "csv"]
_FIELDS = [f.name for f in dataclasses.fields(AuditEntry)]


async def export_audit(
    ledger: Ledger,
    path: str | Path,
    fmt: AuditFormat = "jsonl",
    *,
    tenant: str | None = None,
    query_id: str | None = None,
    since: float | None = None,
) -> int:
    """Write the (filtered) audit trail to ``path``, oldest first; return the number of lines.

    Columns, in order: ``at`` (epoch seconds, UTC), ``event``, ``reservation_id``, ``tenant``,
    ``query_id``, ``tier``, ``expert``, ``amount_usd``, ``input_tokens``, ``output_tokens``,
    ``detail``.

    >>> import asyncio, tempfile, os
    >>> from corl_graph.budget import InMemoryLedger
    >>> out = os.path.join(tempfile.mkdtemp(), "audit.csv")
    >>> asyncio.run(export_audit(InMemoryLedger(), out, "csv"))
    0
    """
    if fmt not in ("jsonl", "csv"):
        raise ConfigError(f"audit export format must be 'jsonl' or 'csv', got {fmt!r}")
    target = Path(path)
    if not target.parent.is_dir():
        raise ConfigError(f"cannot write {str(target)!r}: its directory does not exist")
    entries = await ledger.audit(tenant=tenant, query_id=query_id, since=since)
    await asyncio.to_thread(_write, target, fmt, entries)
    return len(entries)


def _write(path: Path, fmt: AuditFormat, entries: list[AuditEntry]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        if fmt == "jsonl":
            for e in entries:
                f.write(json.dumps(dataclasses.asdict(e), ensure_ascii=False) + "\n")
            return
        writer = csv.DictWriter(f, fieldnames=_FIELDS)
        writer.writeheader()
        writer.writerows(dataclasses.asdict(e) for e in entries)
