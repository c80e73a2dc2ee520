"""Table names and DDL of the PostgreSQL ledger; created on first use, versioned in a meta table."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from corl_graph._exceptions import ConfigError, LedgerError
from corl_graph.budget._migrate import (
    LedgerTables,
    finite,
    non_negative,
    rebuild_totals,
    repair_rows,
)
from corl_graph.budget._rows import SCHEMA_VERSION

__all__ = ["Tables", "create_schema", "drop_schema"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NAMES = ("meta", "tenants", "reservations", "query_totals", "tenant_totals", "audit")


@dataclass(frozen=True, slots=True)
class Tables:
    """Quoted, schema-qualified table names built from a validated schema and prefix."""

    schema: str | None
    prefix: str

    def __post_init__(self) -> None:
        # Names are pasted into SQL, so only plain identifiers are allowed; 40 characters leave
        # room for the longest suffix within PostgreSQL's 63-byte identifier limit.
        for what, value in (("schema", self.schema), ("table_prefix", self.prefix)):
            if value is not None and (not _IDENT.match(value) or len(value) > 40):
                raise ConfigError(
                    f"{what} {value!r} must be letters, digits and '_' (not starting with a "
                    "digit), at most 40 characters"
                )

    def name(self, table: str) -> str:
        quoted = f'"{self.prefix}{table}"'
        return quoted if self.schema is None else f'"{self.schema}".{quoted}'

    @property
    def meta(self) -> str:
        return self.name("meta")

    @property
    def tenants(self) -> str:
        return self.name("tenants")

    @property
    def reservations(self) -> str:
        return self.name("reservations")

    @property
    def query_totals(self) -> str:
        return self.name("query_totals")

    @property
    def tenant_totals(self) -> str:
        return self.name("tenant_totals")

    @property
    def audit(self) -> str:
        return self.name("audit")

    def ledger_tables(self) -> LedgerTables:
        return LedgerTables(self.reservations, self.query_totals, self.tenant_totals, self.audit)


# Schema 2: no NaN, infinity or negative amount can be stored, whatever the client sends
# (the ledger API refuses them first; these make the database refuse them too).
_RESERVATION_CHECKS = {
    "amount_ok": non_negative("amount_usd"),
    "charged_ok": non_negative("charged_usd"),
    "tokens_ok": "tokens >= 0",
    "times_ok": f"{finite('created_at')} AND {finite('expires_at')}",
}
_TOTALS_CHECKS = {
    "sums_ok": " AND ".join(finite(c) for c in ("settled_usd", "held_usd", "expired_usd")),
    "counts_ok": "calls >= 0 AND tokens >= 0 AND held_n >= 0 AND expired_n >= 0",
}
_CHECKS = {
    "tenants": {"limit_ok": non_negative("limit_usd")},
    "reservations": _RESERVATION_CHECKS,
    "query_totals": _TOTALS_CHECKS,
    "tenant_totals": _TOTALS_CHECKS,
    "audit": {"amount_ok": finite("amount_usd")},
}


def _checks(table: str) -> str:
    return "".join(f", CONSTRAINT {name} CHECK ({sql})" for name, sql in _CHECKS[table].items())


_TOTALS = (
    "settled_usd double precision NOT NULL, held_usd double precision NOT NULL, "
    "expired_usd double precision NOT NULL, calls bigint NOT NULL, tokens bigint NOT NULL, "
    "held_n bigint NOT NULL, expired_n bigint NOT NULL"
)


def _query_totals_ddl(t: Tables) -> str:
    # Keyed by (query id, tenant): one tenant's query id never shares another's cap; query id
    # first, so summing a query id over its tenants reads one index range.
    return (
        f"CREATE TABLE IF NOT EXISTS {t.query_totals} (query_id text NOT NULL, "
        f"tenant text NOT NULL, {_TOTALS}, PRIMARY KEY (query_id, tenant)"
        f"{_checks('query_totals')})"
    )


def _ddl(t: Tables) -> list[str]:
    p = t.prefix
    return [
        f"CREATE TABLE IF NOT EXISTS {t.meta} (key text PRIMARY KEY, value text NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {t.tenants} (tenant text PRIMARY KEY, "
        f"limit_usd double precision NOT NULL, period text NOT NULL{_checks('tenants')})",
        f"CREATE TABLE IF NOT EXISTS {t.reservations} (id text PRIMARY KEY, "
        "tenant text NOT NULL, query_id text NOT NULL, tier text NOT NULL, expert text NOT NULL, "
        "amount_usd double precision NOT NULL, created_at double precision NOT NULL, "
        "expires_at double precision NOT NULL, period text NOT NULL, status text NOT NULL, "
        "charged_usd double precision NOT NULL, tokens bigint NOT NULL"
        f"{_checks('reservations')})",
        f'CREATE INDEX IF NOT EXISTS "{p}reservations_held" ON {t.reservations} (expires_at) '
        "WHERE status = 'held'",
        _query_totals_ddl(t),
        f"CREATE TABLE IF NOT EXISTS {t.tenant_totals} (tenant text NOT NULL, "
        f"period text NOT NULL, {_TOTALS}, PRIMARY KEY (tenant, period)"
        f"{_checks('tenant_totals')})",
        f"CREATE TABLE IF NOT EXISTS {t.audit} (seq bigserial PRIMARY KEY, "
        "at double precision NOT NULL, event text NOT NULL, reservation_id text NOT NULL, "
        "tenant text NOT NULL, query_id text NOT NULL, tier text NOT NULL, expert text NOT NULL, "
        "amount_usd double precision NOT NULL, input_tokens bigint NOT NULL, "
        "output_tokens bigint NOT NULL, detail text NOT NULL"
        f"{_checks('audit')})",
        f'CREATE INDEX IF NOT EXISTS "{p}audit_tenant" ON {t.audit} (tenant, seq)',
        f'CREATE INDEX IF NOT EXISTS "{p}audit_query" ON {t.audit} (query_id, seq)',
    ]


async def create_schema(conn: Any, tables: Tables) -> None:
    """Create the tables if missing and refuse a schema newer than this code understands."""
    async with conn.transaction():
        # Two replicas starting together would race on CREATE TABLE IF NOT EXISTS (it is not
        # atomic against itself in PostgreSQL); an advisory lock per table set serialises them.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"corl_ledger:{tables.meta}",)
        )
        version = await _version(conn, tables)
        if version is None:
            # DDL only when missing: CREATE INDEX IF NOT EXISTS still takes a SHARE lock on a
            # live table, which blocks (or deadlocks with) other replicas' writes.
            if tables.schema is not None:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{tables.schema}"')
            for statement in _ddl(tables):
                await conn.execute(statement)
            await conn.execute(
                f"INSERT INTO {tables.meta} VALUES ('schema_version', %s) ON CONFLICT DO NOTHING",
                (str(SCHEMA_VERSION),),
            )
            version = await _version(conn, tables)
        elif int(version) < SCHEMA_VERSION:
            await _migrate(conn, tables, int(version))
            version = await _version(conn, tables)
    if version is None:  # the INSERT above cannot leave it missing
        raise LedgerError(f"ledger tables {tables.meta} have no schema_version row")
    if int(version) > SCHEMA_VERSION:
        raise LedgerError(
            f"ledger tables {tables.meta} have schema version {version}, newer than this "
            f"corl_graph supports ({SCHEMA_VERSION}); upgrade corl_graph"
        )


async def _migrate(conn: Any, tables: Tables, version: int) -> None:
    """Bring tables of an older schema version up to date, inside the caller's transaction
    (under its advisory lock, so one replica migrates and the others wait)."""
    lt = tables.ledger_tables()
    # 3: per-query totals keyed by (query id, tenant); rebuilt below from the reservations.
    await conn.execute(f"DROP TABLE {tables.query_totals}")
    await conn.execute(_query_totals_ddl(tables))
    for statement in [*repair_rows(lt, time.time()), *rebuild_totals(lt)]:
        await conn.execute(statement)
    if version < 2:  # 2: CHECK constraints (the new query_totals table has its own)
        for table, checks in _CHECKS.items():
            for name, sql in checks.items():
                if table != "query_totals":
                    await conn.execute(
                        f"ALTER TABLE {tables.name(table)} ADD CONSTRAINT {name} CHECK ({sql})"
                    )
    await conn.execute(
        f"UPDATE {tables.meta} SET value = %s WHERE key = 'schema_version'",
        (str(SCHEMA_VERSION),),
    )


async def _version(conn: Any, tables: Tables) -> str | None:
    """The stored schema version, or None when the tables are not (all) there yet."""
    cur = await conn.execute("SELECT to_regclass(%s)", (tables.meta,))
    if (await cur.fetchone())[0] is None:
        return None
    cur = await conn.execute(f"SELECT value FROM {tables.meta} WHERE key = 'schema_version'")
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def drop_schema(conn: Any, tables: Tables) -> None:
    """Drop every ledger table of ``tables`` (tests, or tearing down a tenant's ledger)."""
    async with conn.transaction():
        for table in reversed(_NAMES):
            await conn.execute(f"DROP TABLE IF EXISTS {tables.name(table)}")
