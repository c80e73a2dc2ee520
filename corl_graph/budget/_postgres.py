"""PostgreSQL ledger: one database shared by several router replicas.

Each operation is one short READ COMMITTED transaction that locks the rows it changes, always
in the same order — reservation (a reserve takes an advisory lock on its id instead, as the
row may not exist yet), then the query's totals row, then the tenant period's totals row —
so two replicas can never both pass a cap check on stale totals (no lost updates), never both
create one reservation id, and never deadlock each other. A deadlock or serialization failure
anyway (say a DBA's manual transaction) is retried: every operation is idempotent by
reservation id, so a retry after an unknown outcome is safe too.

psycopg is imported when the first connection opens, so routing without the ``postgres``
extra never needs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from corl_graph._exceptions import (
    BudgetExceededError,
    ConfigError,
    LedgerError,
    UnknownTenantError,
)
from corl_graph.budget._caps import check_caps
from corl_graph.budget._ledger import (
    AuditEntry,
    ReconcileReport,
    Reservation,
    ReservationRequest,
    SpendSummary,
    Usage,
)
from corl_graph.budget._pgschema import Tables, create_schema
from corl_graph.budget._rows import (
    AUDIT_COLUMNS,
    RESERVATION_COLUMNS,
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
from corl_graph.budget._tiers import Period, TenantBudget, period_key

__all__ = ["PostgresLedger"]

T = TypeVar("T")
_RETRIES = 8  # tries of one operation that keeps hitting deadlocks or serialization failures
_BACKOFF_S = 0.002  # first retry waits up to this long (random), doubling up to _BACKOFF_MAX_S
_BACKOFF_MAX_S = 0.25
_RECONNECTS = 2  # fresh connections tried after the server dropped one
# SQLSTATEs after which the whole transaction may simply be run again: transaction_rollback,
# serialization_failure, deadlock_detected. psycopg 3 gives every SQLSTATE its own class
# directly under OperationalError (DeadlockDetected is NOT a TransactionRollback, unlike
# psycopg2's hierarchy), so conflicts are recognised by code, not by class.
_CONFLICTS = {
    "40000": "transaction rollback",
    "40001": "serialization failure",
    "40P01": "deadlock detected",
}
_ZEROS = "0, 0, 0, 0, 0, 0, 0"
_TOTALS_SET = ", ".join(f"{c} = %s" for c in TOTALS_COLUMNS.split(", "))


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            "the PostgreSQL ledger needs psycopg: pip install 'corl-graph[postgres]'"
        ) from exc
    return psycopg


def redact(url: str) -> str:
    """``url`` with any password replaced by ***, for error messages and logs."""
    url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", url)


def conflict_of(exc: BaseException) -> BaseException | None:
    """The deadlock or serialization failure behind ``exc``, or None if it is not one.

    Looks through ``__cause__`` and ``__context__`` as well: in pipeline mode the server's
    error may reach us wrapped (a ``PipelineAborted`` raised while the real error was being
    handled, or an error of ours raised from it).
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if getattr(e, "sqlstate", None) in _CONFLICTS:
            return e
        todo += [e.__cause__, e.__context__]
    return None


class _Pool:
    """A few reusable connections; a broken or mid-transaction connection is never reused."""

    def __init__(self, open_conn: Callable[[], Awaitable[Any]], size: int):
        self._open = open_conn
        self._size = size
        self._idle: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None

    def _bind(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or loop is not self._loop:
            # A new event loop (asyncio.run twice): connections of the old loop cannot be
            # awaited here, so close their sockets synchronously and start over.
            for conn in self._idle:
                conn.pgconn.finish()
            self._idle.clear()
            self._loop, self._slots = loop, asyncio.Semaphore(self._size)
        return self._slots

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        async with self._bind():
            conn = self._idle.pop() if self._idle else await self._open()
            try:
                yield conn
            finally:
                idle = conn.info.transaction_status == _psycopg().pq.TransactionStatus.IDLE
                if not conn.closed and idle:
                    self._idle.append(conn)
                else:
                    await conn.close()

    async def discard_idle(self) -> None:
        """Close the idle connections (after one of them turned out to be dead)."""
        await self.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        same_loop = self._loop is asyncio.get_running_loop()
        for conn in idle:
            if same_loop:
                await conn.close()
            else:  # opened under an earlier event loop: it cannot be awaited here
                conn.pgconn.finish()


class PostgresLedger:
    """A ``Ledger`` in PostgreSQL, shared by any number of router replicas.

    Tables are created on first use, named ``<table_prefix>reservations`` etc., in ``schema``
    (the connection's search path when None). ``pool_size`` connections are opened lazily.

    >>> import asyncio
    >>> from corl_graph.budget import BudgetTier, ReservationRequest, TenantBudget, Usage
    >>> async def main() -> str:
    ...     async with PostgresLedger("postgresql://postgres@127.0.0.1/test",
    ...                               table_prefix="doctest_") as ledger:
    ...         await ledger.set_tenant(TenantBudget("acme", 10.0, "month"))
    ...         req = ReservationRequest("acme", "q1", BudgetTier("low", 0.01), "gpt", 0.004, 9, 9)
    ...         r = await ledger.reserve(req)
    ...         return (await ledger.settle(r.id, Usage(9, 2, 0.001))).status
    >>> asyncio.run(main())  # doctest: +SKIP
    'settled'
    """

    def __init__(
        self,
        url: str,
        *,
        default_budget: TenantBudget | None = None,
        schema: str | None = None,
        table_prefix: str = "corl_ledger_",
        pool_size: int = 4,
        connect_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ):
        if pool_size < 1:
            raise ConfigError(f"pool_size must be >= 1, got {pool_size}")
        self._url = url
        self._tables = Tables(schema, table_prefix)
        self._default = default_budget
        self._clock = clock
        self._connect_timeout_s = connect_timeout_s
        self._pool = _Pool(self._open, pool_size)
        self._ready = False
        # Period kind ("day", ...) of each tenant's budget as last read: a reserve locks the
        # tenant's totals row in its first round trip on this guess (checked, redone if wrong).
        self._periods: dict[str, Period] = {}
        self._closed = False

    async def __aenter__(self) -> PostgresLedger:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open a connection and create the tables now; raise ``LedgerError`` if unreachable."""
        await self._run(lambda conn: asyncio.sleep(0))

    async def _open(self) -> Any:
        psycopg = _psycopg()
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,  # transactions are explicit: conn.transaction()
                connect_timeout=max(1, round(self._connect_timeout_s)),
            )
        except psycopg.Error as exc:
            raise LedgerError(
                f"cannot connect to the PostgreSQL ledger at {redact(self._url)}: "
                f"{str(exc).strip()}; check that the server is running and the URL "
                "(host, port, database, user) is right"
            ) from exc
        if not self._ready:
            try:
                await create_schema(conn, self._tables)
            except BaseException:
                await conn.close()
                raise
            self._ready = True
        return conn

    async def _run(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op`` on a pooled connection; retry conflicts, map storage errors to LedgerError.

        A deadlock or serialization failure rolls back ``op``'s transaction (the connection is
        back to idle and goes back to the pool), so ``op`` runs again from its first statement
        in a new transaction, after a random, doubling pause: at most ``_RETRIES`` tries.
        """
        if self._closed:
            raise ConfigError("this PostgresLedger is closed; open a new one")
        psycopg = _psycopg()
        reconnects = 0
        for attempt in range(1, _RETRIES + 1):
            lost = False
            try:
                async with self._pool.connection() as conn:
                    try:
                        return await op(conn)
                    except psycopg.OperationalError:
                        lost = bool(conn.broken or conn.closed)
                        raise
            except psycopg.Error as exc:
                conflict = conflict_of(exc)
                if conflict is not None and not lost:
                    if attempt == _RETRIES:
                        raise self._conflict_error(conflict) from exc
                    cap = min(_BACKOFF_MAX_S, _BACKOFF_S * 2 ** (attempt - 1))
                    await asyncio.sleep(random.uniform(0, cap))
                    continue
                # The server closed the connection (restart, failover, pg_terminate_backend):
                # its idle siblings are most likely dead too. Drop them and retry on a fresh
                # connection; every operation is idempotent by id, so an unknown outcome is safe.
                if not lost or reconnects >= _RECONNECTS or attempt == _RETRIES:
                    raise LedgerError(
                        f"PostgreSQL ledger at {redact(self._url)} failed: {str(exc).strip()}"
                    ) from exc
                reconnects += 1
                await self._pool.discard_idle()
        raise AssertionError("unreachable")  # the loop returns or raises

    def _conflict_error(self, conflict: BaseException) -> LedgerError:
        code = getattr(conflict, "sqlstate", None)
        return LedgerError(
            f"PostgreSQL ledger at {redact(self._url)}: {_CONFLICTS.get(code or '', 'conflict')} "
            f"(SQLSTATE {code}) persisted after {_RETRIES} tries: {str(conflict).strip()}; "
            "nothing was written by the failed tries, so the operation can be retried with the "
            "same reservation_id; look for long transactions locking the ledger's tables"
        )

    # --- reads and writes inside a transaction ------------------------------------------------

    # Methods named _ask_* send a statement and return its cursor without waiting, so several
    # can travel in one pipeline round trip; fetching from a cursor waits for its result.

    async def _ask_budget(self, conn: Any, tenant: str) -> Any:
        sql = f"SELECT limit_usd, period FROM {self._tables.tenants} WHERE tenant = %s"
        return await conn.execute(sql, (tenant,))

    async def _budget(self, tenant: str, cursor: Any) -> TenantBudget:
        row = await cursor.fetchone()
        if row is not None:
            return TenantBudget(tenant, float(row[0]), row[1])
        if self._default is None:
            raise UnknownTenantError(
                f"tenant {tenant!r} has no budget; call ledger.set_tenant(TenantBudget({tenant!r},"
                " limit_usd=..., period=...)) or give the ledger a default_budget"
            )
        return replace(self._default, tenant=tenant)

    async def _ask_reservation(self, conn: Any, reservation_id: str, *, lock: bool) -> Any:
        sql = f"SELECT {RESERVATION_COLUMNS} FROM {self._tables.reservations} WHERE id = %s"
        return await conn.execute(sql + (" FOR UPDATE" if lock else ""), (reservation_id,))

    async def _ask_lock_query(self, conn: Any, tenant: str, query_id: str) -> Any:
        # ON CONFLICT DO UPDATE locks an existing row and returns its latest committed values
        # in one statement; SELECT ... FOR UPDATE would need a second one to create the row.
        return await conn.execute(
            f"INSERT INTO {self._tables.query_totals} (query_id, tenant, {TOTALS_COLUMNS}) "
            f"VALUES (%s, %s, {_ZEROS}) ON CONFLICT (query_id, tenant) DO UPDATE SET "
            f"query_id = excluded.query_id RETURNING {TOTALS_COLUMNS}",
            (query_id, tenant),
        )

    async def _ask_lock_totals_of(self, conn: Any, reservation_id: str) -> tuple[Any, Any]:
        """Lock the query's, then the tenant period's, totals rows of a reservation, found by
        its id: sent together with the reservation's own lock, in one round trip."""
        t = self._tables
        query = await conn.execute(
            f"UPDATE {t.query_totals} SET query_id = query_id WHERE (query_id, tenant) = "
            f"(SELECT query_id, tenant FROM {t.reservations} WHERE id = %s) "
            f"RETURNING {TOTALS_COLUMNS}",
            (reservation_id,),
        )
        tenant = await conn.execute(
            f"UPDATE {t.tenant_totals} SET tenant = tenant WHERE (tenant, period) = "
            f"(SELECT tenant, period FROM {t.reservations} WHERE id = %s) "
            f"RETURNING {TOTALS_COLUMNS}",
            (reservation_id,),
        )
        return query, tenant

    async def _ask_lock_tenant(self, conn: Any, tenant: str, period: str) -> Any:
        return await conn.execute(
            f"INSERT INTO {self._tables.tenant_totals} (tenant, period, {TOTALS_COLUMNS}) "
            f"VALUES (%s, %s, {_ZEROS}) ON CONFLICT (tenant, period) "
            f"DO UPDATE SET tenant = excluded.tenant RETURNING {TOTALS_COLUMNS}",
            (tenant, period),
        )

    async def _write(
        self,
        conn: Any,
        new: StoredReservation,
        totals: tuple[Totals, Totals],
        entries: list[AuditEntry],
    ) -> None:
        """The reservation, both totals rows and the audit lines in ONE statement: every
        statement costs psycopg's pipeline about 0.2 ms of client CPU, more than the server's
        work here. The rows were locked earlier in this transaction, in the fixed order."""
        t, r = self._tables, new.reservation
        query, tenant = totals
        audit_rows = ", ".join([f"({', '.join(['%s'] * 11)})"] * len(entries))
        audit_sql = (
            f"INSERT INTO {t.audit} ({AUDIT_COLUMNS}) VALUES {audit_rows}"
            if entries
            else "SELECT 1"
        )
        await conn.execute(
            f"WITH r AS (INSERT INTO {t.reservations} ({RESERVATION_COLUMNS}) "
            f"VALUES ({', '.join(['%s'] * 12)}) ON CONFLICT (id) DO UPDATE SET "
            "status = excluded.status, charged_usd = excluded.charged_usd, "
            "tokens = excluded.tokens), "
            f"q AS (UPDATE {t.query_totals} SET {_TOTALS_SET} "
            "WHERE query_id = %s AND tenant = %s), "
            f"p AS (UPDATE {t.tenant_totals} SET {_TOTALS_SET} "
            f"WHERE tenant = %s AND period = %s) {audit_sql}",
            (
                *reservation_values(new),
                *query.as_tuple(),
                r.query_id,
                r.tenant,
                *tenant.as_tuple(),
                r.tenant,
                r.period,
                *(v for e in entries for v in audit_values(e)),
            ),
        )

    async def _log(self, conn: Any, entries: list[AuditEntry]) -> None:
        async with conn.cursor() as cur:
            await cur.executemany(
                f"INSERT INTO {self._tables.audit} ({AUDIT_COLUMNS}) "
                f"VALUES ({', '.join(['%s'] * 11)})",
                [audit_values(e) for e in entries],
            )

    # --- the Ledger protocol -------------------------------------------------------------------

    async def set_tenant(self, budget: TenantBudget) -> None:
        async def op(conn: Any) -> None:
            await conn.execute(
                f"INSERT INTO {self._tables.tenants} VALUES (%s, %s, %s) ON CONFLICT (tenant) "
                "DO UPDATE SET limit_usd = excluded.limit_usd, period = excluded.period",
                (budget.tenant, budget.limit_usd, budget.period),
            )

        await self._run(op)

    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation:
        validate_request(request, reservation_id)
        rid = reservation_id or uuid.uuid4().hex

        async def op(conn: Any) -> Reservation | BudgetExceededError:
            now = self._clock()
            guess = self._periods.get(request.tenant) or (
                self._default.period if self._default is not None else None
            )
            # Two round trips: (budget, lock query row, look up id, lock the tenant row of the
            # period guessed from the last budget seen), writes. A wrong guess costs a third.
            async with conn.pipeline(), conn.transaction():
                # Serialise reserves of one id first: two of them for different query ids
                # would lock different query rows, both find no reservation, and both count
                # it (the second INSERT only updates the row; its totals were already moved).
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._id_lock(rid),))
                budget_cur = await self._ask_budget(conn, request.tenant)
                query_cur = await self._ask_lock_query(conn, request.tenant, request.run_id)
                # Runs after the query row is locked, so a concurrent retry of this same
                # reserve has either committed (we return it) or not started (we insert).
                existing_cur = await self._ask_reservation(conn, rid, lock=False)
                guessed = period_key(guess, now) if guess is not None else None
                tenant_cur = None
                if guessed is not None:
                    tenant_cur = await self._ask_lock_tenant(conn, request.tenant, guessed)
                budget = await self._budget(request.tenant, budget_cur)
                self._periods[request.tenant] = budget.period
                query = totals_from_row(await query_cur.fetchone())
                existing = await existing_cur.fetchone()
                if existing is not None:
                    return reservation_from_row(existing).reservation
                row = new_reservation(request, rid, now, period_key(budget.period, now))
                if tenant_cur is None or guessed != row.reservation.period:
                    tenant_cur = await self._ask_lock_tenant(
                        conn, request.tenant, row.reservation.period
                    )
                tenant = totals_from_row(await tenant_cur.fetchone())
                try:
                    check_caps(
                        request, query=query.summary(), tenant=tenant.summary(), budget=budget
                    )
                except BudgetExceededError as exc:
                    await self._log(conn, [denied_entry(row, exc, now)])  # denials are audited
                    return exc
                query.move(None, row)
                tenant.move(None, row)
                await self._write(conn, row, (query, tenant), [reserved_entry(row, request, now)])
                return row.reservation

        result = await self._run(op)
        if isinstance(result, BudgetExceededError):
            raise result
        return result

    def _id_lock(self, reservation_id: str) -> int:
        """A signed 64-bit advisory-lock key for one reservation id of these tables."""
        digest = hashlib.blake2b(
            f"{self._tables.reservations}\0{reservation_id}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big", signed=True)

    async def _apply(
        self, conn: Any, reservation_id: str, action: Action, usage: Usage | None
    ) -> tuple[Reservation, bool]:
        """Settle, release or expire one reservation; also says whether anything changed."""
        # Two round trips: (lock the reservation, then its totals rows), writes.
        async with conn.pipeline(), conn.transaction():
            cursor = await self._ask_reservation(conn, reservation_id, lock=True)
            query_cur, tenant_cur = await self._ask_lock_totals_of(conn, reservation_id)
            found = await cursor.fetchone()
            if found is None:
                raise ConfigError(f"no reservation with id {reservation_id!r}")
            row = reservation_from_row(found)
            changed = transition(row, action, self._clock(), usage)
            if changed is None:
                return row.reservation, False
            new, entries = changed
            r = row.reservation
            query_row, tenant_row = await query_cur.fetchone(), await tenant_cur.fetchone()
            if query_row is None:  # a totals row deleted by hand: recreate it as a reserve does
                query_row = await (
                    await self._ask_lock_query(conn, r.tenant, r.query_id)
                ).fetchone()
            if tenant_row is None:
                tenant_cur = await self._ask_lock_tenant(conn, r.tenant, r.period)
                tenant_row = await tenant_cur.fetchone()
            query = totals_from_row(query_row)
            tenant = totals_from_row(tenant_row)
            query.move(row, new)
            tenant.move(row, new)
            await self._write(conn, new, (query, tenant), entries)
            return new.reservation, True

    async def settle(self, reservation_id: str, usage: Usage) -> Reservation:
        validate_usage(reservation_id, usage)
        done = await self._run(lambda conn: self._apply(conn, reservation_id, "settle", usage))
        return done[0]

    async def release(self, reservation_id: str) -> Reservation:
        validate_lookup(reservation_id=reservation_id)
        done = await self._run(lambda conn: self._apply(conn, reservation_id, "release", None))
        return done[0]

    async def _totals(self, conn: Any, table: str, where: str, key: tuple[str, ...]) -> Totals:
        cur = await conn.execute(f"SELECT {TOTALS_COLUMNS} FROM {table} WHERE {where}", key)
        return totals_from_row(await cur.fetchone())

    async def query_spend(self, query_id: str, *, tenant: str | None = None) -> SpendSummary:
        validate_lookup(query_id=query_id, tenant=tenant)
        table = self._tables.query_totals

        async def op(conn: Any) -> SpendSummary:
            if tenant is not None:
                where, key = "query_id = %s AND tenant = %s", (query_id, tenant)
                return (await self._totals(conn, table, where, key)).summary()
            cur = await conn.execute(
                f"SELECT {TOTALS_COLUMNS} FROM {table} WHERE query_id = %s", (query_id,)
            )
            return sum_summaries(totals_from_row(row).summary() for row in await cur.fetchall())

        return await self._run(op)

    async def tenant_spend(self, tenant: str, *, at: float | None = None) -> SpendSummary:
        validate_lookup(tenant=tenant)

        async def op(conn: Any) -> Totals:
            budget = await self._budget(tenant, await self._ask_budget(conn, tenant))
            period = period_key(budget.period, self._clock() if at is None else at)
            where = "tenant = %s AND period = %s"
            return await self._totals(conn, self._tables.tenant_totals, where, (tenant, period))

        return (await self._run(op)).summary()

    async def reconcile(self, *, now: float | None = None) -> ReconcileReport:
        cutoff = self._clock() if now is None else now

        async def due(conn: Any) -> list[str]:
            cur = await conn.execute(
                f"SELECT id FROM {self._tables.reservations} "
                "WHERE status = 'held' AND expires_at <= %s ORDER BY expires_at",
                (cutoff,),
            )
            return [rid for (rid,) in await cur.fetchall()]

        expired: list[str] = []
        total = 0.0
        # One transaction per reservation keeps lock order and lock time the same as a settle's;
        # a replica reconciling at the same moment just finds the reservation already expired.
        for rid in await self._run(due):
            r, changed = await self._run(
                partial(self._apply, reservation_id=rid, action="expire", usage=None)
            )
            if changed:
                expired.append(r.id)
                total += r.amount_usd
        return ReconcileReport(tuple(expired), total)

    async def audit(
        self,
        *,
        tenant: str | None = None,
        query_id: str | None = None,
        since: float | None = None,
    ) -> list[AuditEntry]:
        validate_lookup(tenant=tenant, query_id=query_id)
        sql, params = audit_select(
            self._tables.audit, "%s", tenant=tenant, query_id=query_id, since=since
        )

        async def op(conn: Any) -> list[Any]:
            cur = await conn.execute(sql, params)
            return list(await cur.fetchall())

        return [audit_from_row(row) for row in await self._run(op)]

    async def aclose(self) -> None:
        self._closed = True
        await self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresLedger({redact(self._url)!r}, tables={self._tables.prefix!r})"
