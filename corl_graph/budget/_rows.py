"""What the SQL backends share: a reservation as stored, running totals, and transitions.

SQLite and PostgreSQL keep *running totals* per query and per tenant period next to the
reservations, so a cap check reads two rows instead of summing a month of reservations. Each
change of a reservation moves its contribution from one bucket to another::

    status     settled   held     expired   calls  tokens
    held       0         amount   0         1      worst case
    settled    charged   0        0         1      real
    expired    0         0        amount    1      worst case
    released   0         0        0         0      0

The rules for what a settle, release or expiry does live here once, so the two backends only
differ in how they lock and store. ``InMemoryLedger`` stays the reference they are tested against.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from corl_graph._exceptions import BudgetExceededError, ConfigError
from corl_graph.budget._ledger import (
    AuditEntry,
    AuditEvent,
    Reservation,
    ReservationRequest,
    SpendSummary,
    Usage,
    check_id,
)

__all__ = [
    "AUDIT_COLUMNS",
    "RESERVATION_COLUMNS",
    "SCHEMA_VERSION",
    "TOTALS_COLUMNS",
    "Action",
    "StoredReservation",
    "Totals",
    "audit_entry",
    "audit_from_row",
    "audit_select",
    "audit_values",
    "denied_entry",
    "new_reservation",
    "reservation_from_row",
    "reservation_values",
    "reserved_entry",
    "settle_entries",
    "sum_summaries",
    "totals_from_row",
    "transition",
    "validate_lookup",
    "validate_request",
    "validate_usage",
]

# Bump when a table changes; a ledger refuses files written by a newer version and migrates
# older ones (``_migrate``). 2: inputs checked, rows repaired, CHECK constraints (PostgreSQL).
# 3: per-query totals keyed by (query id, tenant): a query's cap is one tenant's.
SCHEMA_VERSION = 3

Action = Literal["settle", "release", "expire"]


@dataclass(frozen=True, slots=True)
class StoredReservation:
    """A reservation plus what it is charged: the settled cost and the tokens it counts."""

    reservation: Reservation
    charged_usd: float = 0.0
    tokens: int = 0

    def contribution(self) -> tuple[float, float, float, int, int]:
        """(settled, held, expired, calls, tokens) this reservation adds to its totals."""
        r = self.reservation
        if r.status == "released":
            return 0.0, 0.0, 0.0, 0, 0
        if r.status == "held":
            return 0.0, r.amount_usd, 0.0, 1, self.tokens
        if r.status == "expired":
            return 0.0, 0.0, r.amount_usd, 1, self.tokens
        return self.charged_usd, 0.0, 0.0, 1, self.tokens


@dataclass(slots=True)
class Totals:
    """Running totals of one query or one tenant period, as stored in a totals row.

    ``held_n`` and ``expired_n`` count reservations in those states: when a count drops to 0
    the matching sum is reset to exactly 0.0, so float drift from adding and removing amounts
    in a different order cannot leave a phantom 1e-19 dollars behind.
    """

    settled_usd: float = 0.0
    held_usd: float = 0.0
    expired_usd: float = 0.0
    calls: int = 0
    tokens: int = 0
    held_n: int = 0
    expired_n: int = 0

    def summary(self) -> SpendSummary:
        return SpendSummary(
            self.settled_usd, self.held_usd, self.expired_usd, self.calls, self.tokens
        )

    def as_tuple(self) -> tuple[float, float, float, int, int, int, int]:
        return (
            self.settled_usd,
            self.held_usd,
            self.expired_usd,
            self.calls,
            self.tokens,
            self.held_n,
            self.expired_n,
        )

    def move(self, old: StoredReservation | None, new: StoredReservation) -> None:
        """Replace ``old``'s contribution (None for a new reservation) with ``new``'s."""
        for row, sign in ((old, -1), (new, 1)):
            if row is None:
                continue
            settled, held, expired, calls, tokens = row.contribution()
            self.settled_usd += sign * settled
            self.held_usd += sign * held
            self.expired_usd += sign * expired
            self.calls += sign * calls
            self.tokens += sign * tokens
            status = row.reservation.status
            self.held_n += sign * (status == "held")
            self.expired_n += sign * (status == "expired")
        if self.held_n == 0:
            self.held_usd = 0.0
        if self.expired_n == 0:
            self.expired_usd = 0.0


def sum_summaries(summaries: Iterable[SpendSummary]) -> SpendSummary:
    """One summary of several (a query id's spend over the tenants that used it)."""
    total = SpendSummary()
    for s in summaries:
        total = SpendSummary(
            total.settled_usd + s.settled_usd,
            total.held_usd + s.held_usd,
            total.expired_usd + s.expired_usd,
            total.calls + s.calls,
            total.tokens + s.tokens,
        )
    return total


def validate_request(request: ReservationRequest, reservation_id: str | None = None) -> None:
    """The ledger API's own check of a request, before it touches storage.

    ``ReservationRequest`` checks itself when built; this checks again, so that an object
    altered afterwards (``object.__setattr__`` on the frozen dataclass, a duck-typed stand-in)
    still cannot put a NaN, a negative amount or an unbounded id into the ledger.
    """
    if not isinstance(request, ReservationRequest):
        raise ConfigError(f"reserve() takes a ReservationRequest, got {type(request).__name__}")
    ReservationRequest.__post_init__(request)
    if reservation_id is not None:
        check_id(reservation_id, "reservation_id")


def validate_usage(reservation_id: str, usage: Usage) -> None:
    """The ledger API's check of a settle: a valid id and a valid ``Usage``."""
    check_id(reservation_id, "reservation_id")
    if not isinstance(usage, Usage):
        raise ConfigError(f"settle() takes a Usage, got {type(usage).__name__}")
    Usage.__post_init__(usage)


def validate_lookup(
    *, tenant: str | None = None, query_id: str | None = None, reservation_id: str | None = None
) -> None:
    """Ids a read or a release is given: a malformed one is a ``ConfigError``, not a
    driver's encoding error (a lone surrogate cannot be sent to SQLite or PostgreSQL)."""
    for what, value in (
        ("tenant", tenant),
        ("query_id", query_id),
        ("reservation_id", reservation_id),
    ):
        if value is not None:
            check_id(value, what)


def settle_entries(
    settled: Reservation, usage: Usage, at: float, reserved_usd: float
) -> list[AuditEntry]:
    """The audit lines of a settle: the charge, an overrun, a provider report not believed."""
    entries = [
        audit_entry(
            "settled",
            settled,
            at,
            amount_usd=usage.cost_usd,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            detail="estimated" if usage.estimated else "",
        )
    ]
    if usage.cost_usd > reserved_usd:
        over = usage.cost_usd - reserved_usd
        entries.append(audit_entry("overrun", settled, at, amount_usd=over))
    if usage.flagged:
        entries.append(
            audit_entry("invalid_usage", settled, at, amount_usd=0.0, detail=usage.flagged)
        )
    return entries


def new_reservation(
    request: ReservationRequest, reservation_id: str, now: float, period: str
) -> StoredReservation:
    """The HELD reservation ``request`` would create; it counts its worst-case tokens."""
    reservation = Reservation(
        id=reservation_id,
        tenant=request.tenant,
        query_id=request.run_id,
        tier=request.tier.name,
        expert=request.expert,
        amount_usd=request.amount_usd,
        created_at=now,
        expires_at=now + request.lease_s,
        period=period,
    )
    return StoredReservation(reservation, tokens=request.input_tokens + request.max_output_tokens)


def audit_entry(
    event: AuditEvent,
    r: Reservation,
    at: float,
    *,
    amount_usd: float | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    detail: str = "",
) -> AuditEntry:
    return AuditEntry(
        at=at,
        event=event,
        reservation_id=r.id,
        tenant=r.tenant,
        query_id=r.query_id,
        tier=r.tier,
        expert=r.expert,
        amount_usd=r.amount_usd if amount_usd is None else amount_usd,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        detail=detail,
    )


def reserved_entry(row: StoredReservation, request: ReservationRequest, at: float) -> AuditEntry:
    return audit_entry("reserved", row.reservation, at, input_tokens=request.input_tokens)


def denied_entry(row: StoredReservation, exc: BudgetExceededError, at: float) -> AuditEntry:
    return audit_entry("denied", row.reservation, at, detail=str(exc))


def transition(
    row: StoredReservation, action: Action, at: float, usage: Usage | None = None
) -> tuple[StoredReservation, list[AuditEntry]] | None:
    """The new state of ``row`` after ``action`` and its audit lines; None if nothing changes.

    Settled and released are final, which makes a retried settle or release a no-op. A late
    settle of an EXPIRED reservation replaces the reserved amount with the real cost.
    """
    r = row.reservation
    if r.status in ("settled", "released") or (action == "expire" and r.status != "held"):
        return None
    if action == "release":
        released = StoredReservation(replace(r, status="released"))
        return released, [audit_entry("released", released.reservation, at, amount_usd=0.0)]
    if action == "expire":
        expired = replace(row, reservation=replace(r, status="expired"))
        detail = "lease ran out; charged at reserved amount"
        return expired, [audit_entry("expired", expired.reservation, at, detail=detail)]
    if usage is None:
        raise ConfigError("settle needs the call's Usage")
    settled = StoredReservation(
        replace(r, status="settled"), usage.cost_usd, usage.input_tokens + usage.output_tokens
    )
    return settled, settle_entries(settled.reservation, usage, at, r.amount_usd)


# Column order shared by both SQL backends; the converters below read and write in this order.
RESERVATION_COLUMNS = (
    "id, tenant, query_id, tier, expert, amount_usd, created_at, expires_at, period, status, "
    "charged_usd, tokens"
)
TOTALS_COLUMNS = "settled_usd, held_usd, expired_usd, calls, tokens, held_n, expired_n"
AUDIT_COLUMNS = (
    "at, event, reservation_id, tenant, query_id, tier, expert, amount_usd, input_tokens, "
    "output_tokens, detail"
)

SqlValue = str | float | int


def reservation_values(row: StoredReservation) -> tuple[SqlValue, ...]:
    r = row.reservation
    return (
        r.id,
        r.tenant,
        r.query_id,
        r.tier,
        r.expert,
        r.amount_usd,
        r.created_at,
        r.expires_at,
        r.period,
        r.status,
        row.charged_usd,
        row.tokens,
    )


def reservation_from_row(values: Sequence[Any]) -> StoredReservation:
    (rid, tenant, query_id, tier, expert, amount, created, expires, period, status) = values[:10]
    reservation = Reservation(
        id=rid,
        tenant=tenant,
        query_id=query_id,
        tier=tier,
        expert=expert,
        amount_usd=float(amount),
        created_at=float(created),
        expires_at=float(expires),
        period=period,
        status=status,
    )
    return StoredReservation(reservation, float(values[10]), int(values[11]))


def totals_from_row(values: Sequence[Any] | None) -> Totals:
    if values is None:
        return Totals()
    settled, held, expired, calls, tokens, held_n, expired_n = values
    return Totals(
        settled_usd=float(settled),
        held_usd=float(held),
        expired_usd=float(expired),
        calls=int(calls),
        tokens=int(tokens),
        held_n=held_n,
        expired_n=expired_n,
    )


def audit_values(e: AuditEntry) -> tuple[SqlValue, ...]:
    return (
        e.at,
        e.event,
        e.reservation_id,
        e.tenant,
        e.query_id,
        e.tier,
        e.expert,
        e.amount_usd,
        e.input_tokens,
        e.output_tokens,
        e.detail,
    )


def audit_from_row(values: Sequence[Any]) -> AuditEntry:
    at, event, rid, tenant, query_id, tier, expert, amount, in_tok, out_tok, detail = values
    return AuditEntry(
        at=float(at),
        event=event,
        reservation_id=rid,
        tenant=tenant,
        query_id=query_id,
        tier=tier,
        expert=expert,
        amount_usd=float(amount),
        input_tokens=in_tok,
        output_tokens=out_tok,
        detail=detail,
    )


def audit_select(
    table: str,
    mark: str,
    *,
    tenant: str | None,
    query_id: str | None,
    since: float | None,
) -> tuple[str, list[str | float]]:
    """The filtered audit query, oldest first; ``mark`` is the driver's placeholder (? or %s)."""
    where: list[str] = []
    params: list[str | float] = []
    for column, op, value in (
        ("tenant", "=", tenant),
        ("query_id", "=", query_id),
        ("at", ">=", since),
    ):
        if value is not None:
            where.append(f"{column} {op} {mark}")
            params.append(value)
    sql = f"SELECT {AUDIT_COLUMNS} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + " ORDER BY seq", params
