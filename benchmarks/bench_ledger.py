"""Ledger throughput: reserve+settle pairs per second per backend, at 1, 16 and 256 callers.

    python benchmarks/bench_ledger.py                      # writes benchmarks/results/ledger.json
    python benchmarks/bench_ledger.py --seconds 2 --postgres-url postgresql://...

Each caller loops: reserve the worst case for a fresh query of one of 8 tenants, settle it.
PostgreSQL is skipped (and says so in the JSON) when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corl_graph._exceptions import LedgerError
from corl_graph.budget import (
    BudgetTier,
    InMemoryLedger,
    Ledger,
    PostgresLedger,
    ReservationRequest,
    SQLiteLedger,
    TenantBudget,
    Usage,
)
from corl_graph.budget._pgschema import drop_schema

CONCURRENCY = (1, 16, 256)
TIER = BudgetTier("bench", max_usd_per_query=1.0)
BUDGET = TenantBudget("*", limit_usd=1e12, period="total")


async def _caller(ledger: Ledger, deadline: float, worker: int, latencies: list[float]) -> None:
    n = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        request = ReservationRequest(f"t{worker % 8}", f"w{worker}-{n}", TIER, "e", 0.01, 500, 500)
        r = await ledger.reserve(request)
        await ledger.settle(r.id, Usage(500, 200, 0.004))
        latencies.append(time.perf_counter() - start)
        n += 1


async def measure(ledger: Ledger, callers: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(_caller(ledger, deadline, w, latencies) for w in range(callers)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "pairs": len(latencies),
        "pairs_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 3),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 3),
    }


async def bench_backend(
    name: str, open_: Callable[[], Ledger], seconds: float, cleanup: Callable[[Ledger], Any]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for callers in CONCURRENCY:
        ledger = open_()
        try:
            results[str(callers)] = await measure(ledger, callers, seconds)
        finally:
            await cleanup(ledger)
            await ledger.aclose()
        print(f"{name:>16} x{callers:<4} {results[str(callers)]}", flush=True)
    return results


def machine() -> dict[str, Any]:
    try:
        import psycopg

        psycopg_version: str | None = psycopg.__version__
    except ImportError:
        psycopg_version = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "psycopg": psycopg_version,
        "load_average_at_start": os.getloadavg(),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "seconds_per_run": args.seconds, "backends": {}}
    tmp = Path(tempfile.mkdtemp(prefix="corl-bench-"))

    async def nothing(ledger: Ledger) -> None:
        return None

    def sqlite_opener(sync: str) -> Callable[[], Ledger]:
        def open_() -> Ledger:
            path = tmp / f"{uuid.uuid4().hex}.db"
            return SQLiteLedger(path, default_budget=BUDGET, synchronous=sync)  # type: ignore[arg-type]

        return open_

    backends: dict[str, Callable[[], Ledger]] = {
        "memory": lambda: InMemoryLedger(default_budget=BUDGET),
        "sqlite (synchronous=full)": sqlite_opener("full"),
        "sqlite (synchronous=normal)": sqlite_opener("normal"),
    }
    for name, open_ in backends.items():
        out["backends"][name] = await bench_backend(name, open_, args.seconds, nothing)

    async def drop(ledger: Ledger) -> None:
        assert isinstance(ledger, PostgresLedger)
        async with ledger._pool.connection() as conn:
            await drop_schema(conn, ledger._tables)

    def pg_opener(url: str) -> Callable[[], PostgresLedger]:
        def open_() -> PostgresLedger:
            prefix = f"bench{uuid.uuid4().hex[:8]}_"
            return PostgresLedger(
                url, default_budget=BUDGET, table_prefix=prefix, pool_size=args.pool
            )

        return open_

    # The second run shows how much of the cost is the server's fsync per commit: with
    # synchronous_commit=off a commit returns before its WAL is on disk (a server crash may
    # lose the last few hundred ms of ledger writes; a client crash loses nothing).
    sep = "&" if "?" in args.postgres_url else "?"
    runs = {
        f"postgres (pool_size={args.pool})": args.postgres_url,
        f"postgres (pool_size={args.pool}, synchronous_commit=off)": args.postgres_url
        + f"{sep}options=-csynchronous_commit%3Doff",
    }
    for name, url in runs.items():
        try:
            probe = pg_opener(url)()
            try:
                await probe.connect()
                await drop(probe)
            finally:
                await probe.aclose()
            out["backends"][name] = await bench_backend(name, pg_opener(url), args.seconds, drop)
        except LedgerError as exc:
            out["backends"][name] = {"skipped": str(exc)}
            print(f"{name} skipped: {exc}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per backend and concurrency")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CORL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test"),
    )
    parser.add_argument("--pool", type=int, default=8, help="PostgreSQL connections")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "ledger.json"
    )
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {arguments.out}")
