"""SQLite ledger: the embedded default. One file, WAL mode, safe across processes on one host.

Every operation runs inside a ``BEGIN IMMEDIATE`` transaction: it takes SQLite's write lock
*before* reading, so the cap check and the insert that follows it cannot interleave with another
process doing the same (a plain ``BEGIN`` would read first and fail to upgrade under load).
Operations run on one thread per ledger (``_batch.CommitThread``) which group-commits whatever is
queued, so a writer waiting on ``busy_timeout`` for another process never blocks the event loop,
and one fsync is shared by many concurrent callers.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Literal, TypeVar

from corl_graph._exceptions import (
    BudgetExceededError,
    ConfigError,
    LedgerError,
    UnknownTenantError,
)
from corl_graph.budget._batch import CommitThread
from corl_graph.budget._caps import check_caps
from corl_graph.budget._ledger import (
    AuditEntry,
    ReconcileReport,
    Reservation,
    ReservationRequest,
    SpendSummary,
    Usage,
)
from corl_graph.budget._migrate import LedgerTables, rebuild_totals, repair_rows
from corl_graph.budget._rows import (
    AUDIT_COLUMNS,
    RESERVATION_COLUMNS,
    SCHEMA_VERSION,
    TOTALS_COLUMNS,
    Action,
    StoredReservation,
    Totals,
    audit_from_row,
    audit_select,
    audit_values,
    denied_entry,
    new_reservation,
    reservation_from_row,
    reservation_values,
    reserved_entry,
    sum_summaries,
    totals_from_row,
    transition,
    validate_lookup,
    validate_request,
    validate_usage,
)
from corl_graph.budget._tiers import TenantBudget, period_key

__all__ = ["SQLiteLedger"]

T = TypeVar("T")
Synchronous = Literal["normal", "full"]

_P = "corl_ledger_"  # table prefix: the file may also hold other corl_graph tables
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_P}meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {_P}tenants (
    tenant TEXT PRIMARY KEY, limit_usd REAL NOT NULL, period TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {_P}reservations (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, query_id TEXT NOT NULL, tier TEXT NOT NULL,
    expert TEXT NOT NULL, amount_usd REAL NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL, period TEXT NOT NULL, status TEXT NOT NULL,
    charged_usd REAL NOT NULL, tokens INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS {_P}reservations_held
    ON {_P}reservations (expires_at) WHERE status = 'held';
CREATE TABLE IF NOT EXISTS {_P}query_totals (
    query_id TEXT NOT NULL, tenant TEXT NOT NULL, settled_usd REAL NOT NULL,
    held_usd REAL NOT NULL, expired_usd REAL NOT NULL, calls INTEGER NOT NULL,
    tokens INTEGER NOT NULL, held_n INTEGER NOT NULL, expired_n INTEGER NOT NULL,
    PRIMARY KEY (query_id, tenant));
CREATE TABLE IF NOT EXISTS {_P}tenant_totals (
    tenant TEXT NOT NULL, period TEXT NOT NULL, settled_usd REAL NOT NULL,
    held_usd REAL NOT NULL, expired_usd REAL NOT NULL, calls INTEGER NOT NULL,
    tokens INTEGER NOT NULL, held_n INTEGER NOT NULL, expired_n INTEGER NOT NULL,
    PRIMARY KEY (tenant, period));
CREATE TABLE IF NOT EXISTS {_P}audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, event TEXT NOT NULL,
    reservation_id TEXT NOT NULL, tenant TEXT NOT NULL, query_id TEXT NOT NULL,
    tier TEXT NOT NULL, expert TEXT NOT NULL, amount_usd REAL NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS {_P}audit_tenant ON {_P}audit (tenant, seq);
CREATE INDEX IF NOT EXISTS {_P}audit_query ON {_P}audit (query_id, seq);
"""
_TOTALS_SET = ", ".join(f"{c} = excluded.{c}" for c in TOTALS_COLUMNS.split(", "))


class SQLiteLedger:
    """A ``Ledger`` in one SQLite file, shared safely by several processes on one machine.

    ``synchronous="full"`` (the default) makes every commit durable across power loss;
    ``"normal"`` survives process crashes but may lose the last commits on power loss.
    ``path=":memory:"`` keeps a private database for this one ledger object.

    >>> import asyncio, tempfile, os
    >>> from corl_graph.budget import BudgetTier, ReservationRequest, TenantBudget, Usage
    >>> async def main(path: str) -> str:
    ...     ledger = SQLiteLedger(path, default_budget=TenantBudget("*", 1.0, "total"))
    ...     req = ReservationRequest("t", "q1", BudgetTier("low", 0.01), "gpt", 0.004, 100, 100)
    ...     r = await ledger.reserve(req)
    ...     settled = await ledger.settle(r.id, Usage(100, 20, 0.001))
    ...     await ledger.aclose()
    ...     return settled.status
    >>> asyncio.run(main(os.path.join(tempfile.mkdtemp(), "ledger.db")))
    'settled'
    """

    def __init__(
        self,
        path: str | Path,
        *,
        default_budget: TenantBudget | None = None,
        busy_timeout_s: float = 10.0,
        synchronous: Synchronous = "full",
        clock: Callable[[], float] = time.time,
    ):
        if synchronous not in ("normal", "full"):
            raise ConfigError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self.path = str(path)
        self._default = default_budget
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._conn = self._connect(synchronous)
        self._identity = _file_identity(self.path)
        # One thread owns the connection and group-commits whatever operations are queued.
        self._worker: CommitThread | None = CommitThread(
            self._conn, "corl-sqlite-ledger", check=self._check_file
        )

    # --- opening -----------------------------------------------------------------------------

    def _connect(self, synchronous: Synchronous) -> sqlite3.Connection:
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise ConfigError(
                    f"cannot create ledger {self.path!r}: directory {str(parent)!r} does not "
                    "exist; create it first or choose another path"
                )
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,  # used from the ledger's worker thread
            )
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger file {self.path!r}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            self._init_schema(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise LedgerError(
                f"{self.path!r} is not a usable corl_graph ledger ({exc}); it may be corrupt or "
                "another kind of file: move it away (a new ledger is created in its place) or "
                "point the ledger URL at another file"
            ) from exc
        except LedgerError:
            conn.close()
            raise
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        with _immediate(conn):
            tables = {
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            ours = {t for t in tables if t.startswith(_P)}
            if tables - {"sqlite_sequence"} and f"{_P}meta" not in ours:
                raise LedgerError(
                    f"{self.path!r} is a SQLite database but not a corl_graph ledger (tables: "
                    f"{', '.join(sorted(tables)[:5])}); point the ledger URL at a new file"
                )
            # One statement at a time: executescript() would COMMIT our transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                f"INSERT OR IGNORE INTO {_P}meta VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            (version,) = conn.execute(
                f"SELECT value FROM {_P}meta WHERE key = 'schema_version'"
            ).fetchone()
            if int(version) < SCHEMA_VERSION:
                self._migrate(conn)
        if int(version) > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.path!r} has schema version {version}, newer than this corl_graph "
                f"supports ({SCHEMA_VERSION}); upgrade corl_graph"
            )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring an older file up to this schema inside the open transaction (``_migrate``)."""
        tables = LedgerTables(
            f"{_P}reservations", f"{_P}query_totals", f"{_P}tenant_totals", f"{_P}audit"
        )
        # Schema 3 keys query_totals by (query id, tenant): the old table is rebuilt in full.
        conn.execute(f"DROP TABLE {_P}query_totals")
        conn.execute(next(s for s in _SCHEMA.split(";") if f"{_P}query_totals (" in s))
        for statement in [*repair_rows(tables, self._clock()), *rebuild_totals(tables)]:
            conn.execute(statement)
        conn.execute(
            f"UPDATE {_P}meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
        )

    def _check_file(self) -> None:
        """Fail closed if the ledger file was removed or replaced while we held it open.

        SQLite would go on writing to the unlinked inode, and the spend it records would vanish
        when this process exits; a process opening the path afterwards would start from zero.
        """
        if self._identity is not None and _file_identity(self.path) != self._identity:
            raise LedgerError(
                f"ledger file {self.path!r} was removed or replaced while open; nothing is "
                "recorded until it is restored (put the file back, or restart to use the new one)"
            )

    # --- running blocking work off the event loop ---------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._worker is None:
            raise ConfigError(f"ledger {self.path!r} is closed; open a new one")
        future = self._worker.submit(fn)
        try:
            result: T = await asyncio.wrap_future(future)
            return result
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise LedgerError(
                    f"ledger {self.path!r} stayed locked for more than {self._busy_timeout_s}s "
                    "(another process holds a long write); raise busy_timeout_s or find it"
                ) from exc
            raise LedgerError(f"ledger {self.path!r}: {exc}") from exc
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger {self.path!r} failed: {exc}") from exc

    # --- reads and writes used inside a transaction --------------------------------------------

    def _budget(self, tenant: str) -> TenantBudget:
        row = self._conn.execute(
            f"SELECT limit_usd, period FROM {_P}tenants WHERE tenant = ?", (tenant,)
        ).fetchone()
        if row is not None:
            return TenantBudget(tenant, float(row[0]), row[1])
        if self._default is None:
            raise UnknownTenantError(
                f"tenant {tenant!r} has no budget; call ledger.set_tenant(TenantBudget({tenant!r},"
                " limit_usd=..., period=...)) or give the ledger a default_budget"
            )
        return replace(self._default, tenant=tenant)

    def _load(self, reservation_id: str) -> StoredReservation | None:
        row = self._conn.execute(
            f"SELECT {RESERVATION_COLUMNS} FROM {_P}reservations WHERE id = ?", (reservation_id,)
        ).fetchone()
        return None if row is None else reservation_from_row(row)

    def _query_totals(self, tenant: str, query_id: str) -> Totals:
        return totals_from_row(
            self._conn.execute(
                f"SELECT {TOTALS_COLUMNS} FROM {_P}query_totals WHERE query_id = ? AND tenant = ?",
                (query_id, tenant),
            ).fetchone()
        )

    def _tenant_totals(self, tenant: str, period: str) -> Totals:
        return totals_from_row(
            self._conn.execute(
                f"SELECT {TOTALS_COLUMNS} FROM {_P}tenant_totals WHERE tenant = ? AND period = ?",
                (tenant, period),
            ).fetchone()
        )

    def _store(
        self, old: StoredReservation | None, new: StoredReservation, entries: list[AuditEntry]
    ) -> None:
        """Write ``new`` and move its contribution in both totals rows from ``old``'s."""
        r = new.reservation
        query = self._query_totals(r.tenant, r.query_id)
        tenant = self._tenant_totals(r.tenant, r.period)
        query.move(old, new)
        tenant.move(old, new)
        c = self._conn
        c.execute(
            f"INSERT OR REPLACE INTO {_P}reservations ({RESERVATION_COLUMNS}) "
            f"VALUES ({', '.join('?' * 12)})",
            reservation_values(new),
        )
        c.execute(
            f"INSERT INTO {_P}query_totals (query_id, tenant, {TOTALS_COLUMNS}) "
            f"VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (query_id, tenant) "
            f"DO UPDATE SET {_TOTALS_SET}",
            (r.query_id, r.tenant, *query.as_tuple()),
        )
        c.execute(
            f"INSERT INTO {_P}tenant_totals (tenant, period, {TOTALS_COLUMNS}) "
            f"VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (tenant, period) DO UPDATE SET {_TOTALS_SET}",
            (r.tenant, r.period, *tenant.as_tuple()),
        )
        self._log(entries)

    def _log(self, entries: list[AuditEntry]) -> None:
        self._conn.executemany(
            f"INSERT INTO {_P}audit ({AUDIT_COLUMNS}) VALUES ({', '.join('?' * 11)})",
            [audit_values(e) for e in entries],
        )

    # --- the Ledger protocol -------------------------------------------------------------------

    async def set_tenant(self, budget: TenantBudget) -> None:
        def work() -> None:
            self._conn.execute(
                f"INSERT OR REPLACE INTO {_P}tenants VALUES (?, ?, ?)",
                (budget.tenant, budget.limit_usd, budget.period),
            )

        await self._run(work)

    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation:
        validate_request(request, reservation_id)
        rid = reservation_id or uuid.uuid4().hex

        def work() -> Reservation | BudgetExceededError:
            now = self._clock()
            existing = self._load(rid)
            if existing is not None:
                return existing.reservation
            budget = self._budget(request.tenant)
            row = new_reservation(request, rid, now, period_key(budget.period, now))
            period = row.reservation.period
            try:
                check_caps(
                    request,
                    query=self._query_totals(request.tenant, request.run_id).summary(),
                    tenant=self._tenant_totals(request.tenant, period).summary(),
                    budget=budget,
                )
            except BudgetExceededError as exc:
                self._log([denied_entry(row, exc, now)])  # returned, so the denial is committed
                return exc
            self._store(None, row, [reserved_entry(row, request, now)])
            return row.reservation

        result = await self._run(work)
        if isinstance(result, BudgetExceededError):
            raise result
        return result

    def _apply(self, reservation_id: str, action: Action, usage: Usage | None) -> Reservation:
        """Settle, release or expire one reservation inside the current transaction."""
        row = self._load(reservation_id)
        if row is None:
            raise ConfigError(f"no reservation with id {reservation_id!r}")
        changed = transition(row, action, self._clock(), usage)
        if changed is None:
            return row.reservation
        new, entries = changed
        self._store(row, new, entries)
        return new.reservation

    async def settle(self, reservation_id: str, usage: Usage) -> Reservation:
        validate_usage(reservation_id, usage)
        return await self._run(lambda: self._apply(reservation_id, "settle", usage))

    async def release(self, reservation_id: str) -> Reservation:
        validate_lookup(reservation_id=reservation_id)
        return await self._run(lambda: self._apply(reservation_id, "release", None))

    async def query_spend(self, query_id: str, *, tenant: str | None = None) -> SpendSummary:
        validate_lookup(query_id=query_id, tenant=tenant)
        if tenant is not None:
            return await self._run(lambda: self._query_totals(tenant, query_id).summary())

        def work() -> SpendSummary:
            rows = self._conn.execute(
                f"SELECT {TOTALS_COLUMNS} FROM {_P}query_totals WHERE query_id = ?", (query_id,)
            ).fetchall()
            return sum_summaries(totals_from_row(row).summary() for row in rows)

        return await self._run(work)

    async def tenant_spend(self, tenant: str, *, at: float | None = None) -> SpendSummary:
        validate_lookup(tenant=tenant)

        def work() -> SpendSummary:
            period = period_key(self._budget(tenant).period, self._clock() if at is None else at)
            return self._tenant_totals(tenant, period).summary()

        return await self._run(work)

    async def reconcile(self, *, now: float | None = None) -> ReconcileReport:
        def work() -> ReconcileReport:
            cutoff = self._clock() if now is None else now
            ids = self._conn.execute(
                f"SELECT id FROM {_P}reservations WHERE status = 'held' AND expires_at <= ? "
                "ORDER BY expires_at",
                (cutoff,),
            ).fetchall()
            expired = [self._apply(rid, "expire", None) for (rid,) in ids]
            return ReconcileReport(tuple(r.id for r in expired), sum(r.amount_usd for r in expired))

        return await self._run(work)

    async def audit(
        self,
        *,
        tenant: str | None = None,
        query_id: str | None = None,
        since: float | None = None,
    ) -> list[AuditEntry]:
        validate_lookup(tenant=tenant, query_id=query_id)
        sql, params = audit_select(f"{_P}audit", "?", tenant=tenant, query_id=query_id, since=since)
        rows = await self._run(lambda: self._conn.execute(sql, params).fetchall())
        return [audit_from_row(row) for row in rows]

    async def aclose(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.wrap_future(worker.close())

    def __repr__(self) -> str:
        return f"SQLiteLedger({self.path!r})"


def _file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the ledger file; None for in-memory or vanished files."""
    if path == ":memory:" or path.startswith("file:"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction that holds SQLite's write lock from its first statement."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
