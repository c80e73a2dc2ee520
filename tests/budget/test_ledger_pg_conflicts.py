"""PostgreSQL ledger: deadlocks and serialization failures are retried in a fresh transaction.

The ledger locks its rows in one fixed order, so it never deadlocks itself; these tests make
*another* session (a DBA's transaction, a migration) collide with it, or make the server raise
the conflict from a trigger, and check that the operation is retried, charged once, leaves its
connection idle, and only after the bound fails with a ``LedgerError`` naming the cause.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from ledger_backends import PG_URL, needs_postgres

from corl_graph._exceptions import LedgerError
from corl_graph.budget import (
    BudgetTier,
    PostgresLedger,
    ReservationRequest,
    TenantBudget,
    Usage,
    _postgres,
)
from corl_graph.budget._postgres import _RETRIES, conflict_of

pytestmark = needs_postgres

REQ = ReservationRequest("acme", "q1", BudgetTier("low", 1.0), "gpt", 0.01, 9, 9)


@pytest.fixture
def app() -> str:
    """A unique application_name: finds the ledger's own backends in pg_stat_activity."""
    return f"corl-conflicts-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def ledger(pg_prefix: str, app: str) -> AsyncIterator[PostgresLedger]:
    # The ledger detects deadlocks after 50 ms (server default 1 s); the other session waits
    # 10 s, so the deadlock is always detected, and broken, on the ledger's side.
    url = f"{PG_URL}?application_name={app}&options=-cdeadlock_timeout%3D50ms"
    async with PostgresLedger(url, table_prefix=pg_prefix, pool_size=1) as opened:
        await opened.set_tenant(TenantBudget("acme", 10.0, "month"))
        yield opened


@pytest.fixture
def inject(pg_prefix: str) -> Iterator[str]:
    """SQL that installs a trigger on the audit table raising ``errcode`` on its first ``n``
    rows (a sequence counts them: sequences are not rolled back with the transaction)."""
    seq, fn = f"{pg_prefix}tries", f"{pg_prefix}fail"
    yield (
        f"CREATE SEQUENCE {seq}; "
        f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF nextval('{seq}') <= {{n}} THEN "
        "RAISE EXCEPTION 'injected conflict' USING ERRCODE = '{errcode}'; "
        "END IF; RETURN NEW; END $$; "
        f'CREATE TRIGGER fail BEFORE INSERT ON "{pg_prefix}audit" '
        f"FOR EACH ROW EXECUTE FUNCTION {fn}()"
    )
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP TRIGGER IF EXISTS fail ON "{pg_prefix}audit"')
        conn.execute(f"DROP FUNCTION IF EXISTS {fn}()")
        conn.execute(f"DROP SEQUENCE IF EXISTS {seq}")


async def sql(query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return list(await cur.fetchall()) if cur.description else []


async def ledger_sessions(app: str) -> list[object]:
    """States of the ledger's backends: one ``idle`` connection when it is healthy."""
    rows = await sql("SELECT state FROM pg_stat_activity WHERE application_name = %s", (app,))
    return [state for (state,) in rows]


async def test_a_real_deadlock_on_the_write_is_retried_and_charged_once(
    ledger: PostgresLedger, pg_prefix: str, app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ledger.reserve(REQ, reservation_id="r-first")  # creates q1's totals row
    seen: list[BaseException | None] = []

    def spy(exc: BaseException) -> BaseException | None:
        seen.append(conflict_of(exc))
        return seen[-1]

    monkeypatch.setattr(_postgres, "conflict_of", spy)
    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as other:
        await other.execute("SET deadlock_timeout = '10s'")
        await other.execute("BEGIN")
        # The other session holds the key r-dead (an uncommitted insert) ...
        await other.execute(
            f'INSERT INTO "{pg_prefix}reservations" VALUES '
            "('r-dead', 'x', 'qx', 'low', 'gpt', 0, 0, 0, 'p', 'held', 0, 0)"
        )
        task = asyncio.create_task(ledger.reserve(REQ, reservation_id="r-dead"))
        # ... the ledger locks q1's totals row, then waits for that key in its write ...
        for _ in range(500):
            waiting = await sql(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                "AND wait_event_type = 'Lock'",
                (app,),
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting, "the ledger never waited for the other session's key"
        # ... and the other session now wants q1's totals row: a deadlock, broken on the
        # ledger's side. Its rollback lets the other session go on, which gives the key up.
        update = other.execute(
            f'UPDATE "{pg_prefix}query_totals" SET query_id = query_id WHERE query_id = %s',
            ("q1",),
        )
        await asyncio.wait_for(update, 5)  # well before its own 10 s deadlock check
        await other.execute("ROLLBACK")
        reservation = await asyncio.wait_for(task, 30)
    assert [type(e) for e in seen] == [psycopg.errors.DeadlockDetected]  # one retry
    assert reservation.id == "r-dead" and reservation.status == "held"
    spend = await ledger.query_spend("q1")
    assert spend.calls == 2 and spend.held_usd == pytest.approx(0.02)
    reserved = [e for e in await ledger.audit(query_id="q1") if e.reservation_id == "r-dead"]
    assert [e.event for e in reserved] == ["reserved"]
    assert await ledger_sessions(app) == ["idle"]  # the pool's connection was not left broken


@pytest.mark.parametrize("errcode", ["40001", "40P01"])
async def test_a_conflict_at_the_write_retries_the_whole_transaction(
    ledger: PostgresLedger, inject: str, app: str, pg_prefix: str, errcode: str
) -> None:
    r = await ledger.reserve(REQ, reservation_id="r1")
    await sql(inject.format(n=2, errcode=errcode))
    settled = await ledger.settle(r.id, Usage(9, 2, 0.004))
    assert settled.status == "settled"
    assert await sql(f"SELECT last_value FROM {pg_prefix}tries") == [(3,)]  # two failed tries
    spend = await ledger.tenant_spend("acme")
    assert spend.settled_usd == pytest.approx(0.004) and spend.held_usd == 0
    events = [e.event for e in await ledger.audit(query_id="q1")]
    assert events == ["reserved", "settled"]
    assert await ledger_sessions(app) == ["idle"]


async def test_a_conflict_that_persists_is_a_ledger_error_naming_it(
    ledger: PostgresLedger, inject: str, app: str, pg_prefix: str
) -> None:
    await sql(inject.format(n=1000, errcode="40P01"))
    with pytest.raises(
        LedgerError, match=rf"deadlock detected \(SQLSTATE 40P01\).*{_RETRIES} tries"
    ):
        await ledger.reserve(REQ, reservation_id="r1")
    assert await sql(f"SELECT last_value FROM {pg_prefix}tries") == [(_RETRIES,)]
    assert (await ledger.query_spend("q1")).calls == 0  # every try was rolled back
    assert await ledger_sessions(app) == ["idle"]
    # Once the conflict is gone, the same reservation id goes through, once.
    await sql(f'DROP TRIGGER fail ON "{pg_prefix}audit"')
    await ledger.reserve(REQ, reservation_id="r1")
    await ledger.reserve(REQ, reservation_id="r1")
    assert (await ledger.query_spend("q1")).calls == 1


def test_conflicts_are_found_by_sqlstate_also_when_wrapped() -> None:
    deadlock = psycopg.errors.DeadlockDetected("deadlock detected")
    serialization = psycopg.errors.SerializationFailure("could not serialize access")
    # psycopg 3's classes are flat: neither is a TransactionRollback (psycopg2's were).
    assert not isinstance(deadlock, psycopg.errors.TransactionRollback)
    assert conflict_of(deadlock) is deadlock and conflict_of(serialization) is serialization
    aborted = psycopg.errors.PipelineAborted("pipeline aborted")
    aborted.__context__ = deadlock  # raised while the deadlock was being handled
    assert conflict_of(aborted) is deadlock
    wrapped = psycopg.OperationalError("commit failed")
    wrapped.__cause__ = serialization
    assert conflict_of(wrapped) is serialization
    assert conflict_of(psycopg.errors.PipelineAborted("pipeline aborted")) is None
    assert conflict_of(psycopg.errors.UniqueViolation("duplicate key")) is None
    loop = psycopg.OperationalError("a")
    loop.__context__ = psycopg.OperationalError("b")
    loop.__context__.__context__ = loop
    assert conflict_of(loop) is None
