"""Schema migrations shared by the SQL backends: repair rows older code let in, rebuild totals.

Version 1 stored whatever amounts it was given: a negative settle cost (a refund), a NaN
amount (PostgreSQL only: SQLite turns NaN into NULL and refuses it), an infinity. Version 2
checks every input at the ledger API, and PostgreSQL also refuses such values with CHECK
constraints. Moving a version-1 ledger to version 2:

1. every ``invalid_usage`` repair is written to the audit trail first, naming the row;
2. a reservation amount that is not a finite number >= 0 becomes 0 (nothing trustworthy is
   known of it); a settled charge that is not becomes the reservation's amount, the
   reserved worst case (the rule for impossible provider reports: never a refund); a
   negative token count becomes 0;
3. the running totals are rebuilt from the reservations (which also clears any drift an
   earlier bug left, such as a reservation counted twice); schema 3 keys the per-query totals
   by (query id, tenant), so the old per-query table is dropped and rebuilt too;
4. (PostgreSQL) the CHECK constraints are added.

The statements are plain SQL that SQLite and PostgreSQL both accept; ``1e308`` bounds a
finite double (NaN compares greater than every number in PostgreSQL, so ``x >= 0`` alone
lets it through).
"""

from __future__ import annotations

from dataclasses import dataclass

from corl_graph.budget._rows import TOTALS_COLUMNS

__all__ = ["LedgerTables", "finite", "non_negative", "rebuild_totals", "repair_rows"]


def finite(column: str) -> str:
    """SQL true when ``column`` is a finite number (not NaN, not an infinity)."""
    return f"({column} >= -1e308 AND {column} <= 1e308)"


def non_negative(column: str) -> str:
    """SQL true when ``column`` is a finite number >= 0."""
    return f"({column} >= 0 AND {column} <= 1e308)"


@dataclass(frozen=True, slots=True)
class LedgerTables:
    """The (quoted, qualified) names of one ledger's tables."""

    reservations: str
    query_totals: str
    tenant_totals: str
    audit: str


def repair_rows(t: LedgerTables, at: float) -> list[str]:
    """Statements that audit, then repair, rows no version-2 ledger would have written."""
    bad_amount = f"NOT {non_negative('amount_usd')}"
    bad_charge = f"(status = 'settled' AND NOT {non_negative('charged_usd')})"
    audit_cols = (
        "at, event, reservation_id, tenant, query_id, tier, expert, amount_usd, input_tokens, "
        "output_tokens, detail"
    )
    return [
        # Written before the repair so the old values can still be named.
        f"INSERT INTO {t.audit} ({audit_cols}) SELECT {at!r}, 'invalid_usage', id, tenant, "
        "query_id, tier, expert, 0, 0, 0, 'schema migration 2: stored amount_usd=' || "
        "CAST(amount_usd AS TEXT) || ', charged_usd=' || CAST(charged_usd AS TEXT) || "
        "', tokens=' || CAST(tokens AS TEXT) || '; amount set to 0 if invalid, an invalid "
        f"charge set to the reserved amount' FROM {t.reservations} "
        f"WHERE {bad_amount} OR {bad_charge} OR tokens < 0",
        f"UPDATE {t.reservations} SET amount_usd = 0 WHERE {bad_amount}",
        f"UPDATE {t.reservations} SET charged_usd = amount_usd WHERE {bad_charge}",
        f"UPDATE {t.reservations} SET charged_usd = 0 WHERE NOT {non_negative('charged_usd')}",
        f"UPDATE {t.reservations} SET tokens = 0 WHERE tokens < 0",
        # History is kept, but not a NaN: PostgreSQL's CHECK would refuse the table.
        f"UPDATE {t.audit} SET amount_usd = 0, detail = detail || ' (amount was not finite)' "
        f"WHERE NOT {finite('amount_usd')}",
    ]


def rebuild_totals(t: LedgerTables) -> list[str]:
    """Statements that recompute both totals tables from the reservations (see ``_rows``)."""
    sums = (
        "SUM(CASE WHEN status = 'settled' THEN charged_usd ELSE 0 END), "
        "SUM(CASE WHEN status = 'held' THEN amount_usd ELSE 0 END), "
        "SUM(CASE WHEN status = 'expired' THEN amount_usd ELSE 0 END), "
        "SUM(CASE WHEN status <> 'released' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN status <> 'released' THEN tokens ELSE 0 END), "
        "SUM(CASE WHEN status = 'held' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN status = 'expired' THEN 1 ELSE 0 END)"
    )
    return [
        f"DELETE FROM {t.query_totals}",
        f"INSERT INTO {t.query_totals} (query_id, tenant, {TOTALS_COLUMNS}) "
        f"SELECT query_id, tenant, {sums} FROM {t.reservations} GROUP BY query_id, tenant",
        f"DELETE FROM {t.tenant_totals}",
        f"INSERT INTO {t.tenant_totals} (tenant, period, {TOTALS_COLUMNS}) "
        f"SELECT tenant, period, {sums} FROM {t.reservations} GROUP BY tenant, period",
    ]
