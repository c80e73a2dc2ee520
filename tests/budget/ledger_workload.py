"""A random workload and the invariants it must keep; shared by the asyncio and process tests.

Kept out of ``test_*`` files so ``multiprocessing`` (spawn) children can import it.
"""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from corl_graph._exceptions import BudgetExceededError
from corl_graph.budget import (
    BudgetTier,
    Ledger,
    PostgresLedger,
    ReservationRequest,
    SQLiteLedger,
    TenantBudget,
    Usage,
)
from corl_graph.budget._rows import StoredReservation, Totals, reservation_from_row

TIERS = [
    BudgetTier("low", max_usd_per_query=0.02, max_expert_calls=2),
    BudgetTier("high", max_usd_per_query=0.04, max_expert_calls=8, max_tokens_per_query=20_000),
]
TENANT_LIMIT = 0.25
DEFAULT_BUDGET = TenantBudget("*", TENANT_LIMIT, "total")
EPS = 1e-9


@dataclass
class Outcome:
    """What the callers did; the ledger's numbers are checked against it."""

    settled: dict[str, float] = field(default_factory=dict)  # reservation id -> real cost
    denied: dict[str, int] = field(default_factory=dict)  # scope -> count
    crashed: int = 0

    def merge(self, other: Outcome) -> None:
        self.settled.update(other.settled)
        for scope, n in other.denied.items():
            self.denied[scope] = self.denied.get(scope, 0) + n
        self.crashed += other.crashed


def tier_of(query_id: str) -> BudgetTier:
    return TIERS[int(query_id.split("-")[-1]) % len(TIERS)]


async def run_query(
    ledger: Ledger, query_id: str, tenant: str, rng: random.Random, out: Outcome, calls: int = 6
) -> None:
    """One query's expert calls: reserve the worst case, then settle, release or 'crash'."""
    tier = tier_of(query_id)
    for _ in range(calls):
        amount = rng.uniform(0.0005, 0.012)
        request = ReservationRequest(tenant, query_id, tier, "e", amount, 500, 1500, lease_s=60)
        try:
            r = await ledger.reserve(request)
        except BudgetExceededError as exc:
            out.denied[exc.scope] = out.denied.get(exc.scope, 0) + 1
            continue
        await asyncio.sleep(rng.uniform(0, 0.002))  # the expert call; lets others interleave
        fate = rng.random()
        if fate < 0.6:
            cost = rng.uniform(0, amount)  # the real cost never exceeds the worst case
            usage = Usage(500, rng.randrange(1500), cost)
            # A retried settle racing the first one must still charge once.
            await asyncio.gather(ledger.settle(r.id, usage), ledger.settle(r.id, usage))
            out.settled[r.id] = cost
        elif fate < 0.8:
            await ledger.release(r.id)
        else:
            out.crashed += 1  # never settled: reconcile must expire it and keep it charged


async def run_queries(
    ledger: Ledger, seed: int, queries: Sequence[str], tenants: Sequence[str]
) -> Outcome:
    rng = random.Random(seed)
    out = Outcome()
    await asyncio.gather(
        *(
            run_query(ledger, q, rng.choice(tenants), random.Random(rng.random()), out)
            for q in queries
        )
    )
    return out


async def check_invariants(
    ledger: Ledger, out: Outcome, queries: Sequence[str], tenants: Sequence[str]
) -> None:
    """Caps hold for every query and tenant; every settled call is accounted exactly once."""
    await ledger.reconcile(now=math.inf)
    for q in queries:
        spend = await ledger.query_spend(q)
        tier = tier_of(q)
        assert spend.committed_usd <= tier.max_usd_per_query + EPS, (q, spend)
        assert tier.max_expert_calls is None or spend.calls <= tier.max_expert_calls, (q, spend)
        assert spend.held_usd == 0.0, (q, spend)
    settled_total = 0.0
    for t in tenants:
        spend = await ledger.tenant_spend(t)
        assert spend.committed_usd <= TENANT_LIMIT + EPS, (t, spend)
        settled_total += spend.settled_usd
    audit = await ledger.audit()
    settled = [e for e in audit if e.event == "settled"]
    assert sorted(e.reservation_id for e in settled) == sorted(out.settled)
    assert math.isclose(sum(e.amount_usd for e in settled), settled_total, abs_tol=EPS)
    assert math.isclose(sum(out.settled.values()), settled_total, abs_tol=EPS)
    expired = [e for e in audit if e.event == "expired"]
    assert len(expired) == out.crashed


# --- storage-level checks for the SQL backends ------------------------------------------------


def recount(
    rows: Sequence[Sequence[Any]],
) -> tuple[dict[str, Totals], dict[tuple[str, str], Totals]]:
    """Totals recomputed from the reservation rows, to compare with the stored running totals."""
    queries: dict[str, Totals] = {}
    tenants: dict[tuple[str, str], Totals] = {}
    for values in rows:
        row: StoredReservation = reservation_from_row(values)
        r = row.reservation
        queries.setdefault(r.query_id, Totals()).move(None, row)
        tenants.setdefault((r.tenant, r.period), Totals()).move(None, row)
    return queries, tenants


def assert_totals_match(
    rows: Sequence[Sequence[Any]],
    query_rows: Sequence[Sequence[Any]],
    tenant_rows: Sequence[Sequence[Any]],
) -> None:
    queries, tenants = recount(rows)
    stored_q = {r[0]: r[1:] for r in query_rows}
    stored_t = {(r[0], r[1]): r[2:] for r in tenant_rows}
    assert set(stored_q) >= set(queries)
    pairs = [(stored_q[q], t) for q, t in queries.items()]
    pairs += [(stored_t[k], t) for k, t in tenants.items()]
    for got, totals in pairs:
        want = totals.as_tuple()
        assert all(math.isclose(a, b, abs_tol=EPS) for a, b in zip(got, want, strict=True)), got


def check_sqlite_storage(path: str) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        cols = "settled_usd, held_usd, expired_usd, calls, tokens, held_n, expired_n"
        assert_totals_match(
            conn.execute(f"SELECT {_RES_COLS} FROM corl_ledger_reservations").fetchall(),
            conn.execute(f"SELECT query_id, {cols} FROM corl_ledger_query_totals").fetchall(),
            conn.execute(
                f"SELECT tenant, period, {cols} FROM corl_ledger_tenant_totals"
            ).fetchall(),
        )
    finally:
        conn.close()


def check_postgres_storage(url: str, prefix: str) -> None:
    import psycopg

    cols = "settled_usd, held_usd, expired_usd, calls, tokens, held_n, expired_n"
    with psycopg.connect(url) as conn:
        assert_totals_match(
            conn.execute(f'SELECT {_RES_COLS} FROM "{prefix}reservations"').fetchall(),
            conn.execute(f'SELECT query_id, {cols} FROM "{prefix}query_totals"').fetchall(),
            conn.execute(f'SELECT tenant, period, {cols} FROM "{prefix}tenant_totals"').fetchall(),
        )


_RES_COLS = (
    "id, tenant, query_id, tier, expert, amount_usd, created_at, expires_at, period, status, "
    "charged_usd, tokens"
)


def open_target(target: dict[str, str]) -> Ledger:
    """Open the ledger a child process was told about (a dict pickles across spawn)."""
    if target["kind"] == "sqlite":
        # "normal" survives a killed process exactly as "full" does (only power loss differs)
        # and skips an fsync per commit, which keeps these tests fast on a shared disk.
        return SQLiteLedger(target["path"], default_budget=DEFAULT_BUDGET, synchronous="normal")
    return PostgresLedger(
        target["url"], default_budget=DEFAULT_BUDGET, table_prefix=target["prefix"], pool_size=2
    )


def hammer(target: dict[str, str], seed: int, queries: list[str], tenants: list[str]) -> Outcome:
    """Entry point of a child process: run the workload on its own connection."""

    async def main() -> Outcome:
        ledger = open_target(target)
        try:
            return await run_queries(ledger, seed, queries, tenants)
        finally:
            await ledger.aclose()

    return asyncio.run(main())
