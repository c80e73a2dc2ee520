"""In-memory ledger: exact and fast, for tests and single-process use. Lost on exit."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from corl_graph._exceptions import ConfigError, UnknownTenantError
from corl_graph.budget._caps import check_caps
from corl_graph.budget._ledger import (
    AuditEntry,
    AuditEvent,
    ReconcileReport,
    Reservation,
    ReservationRequest,
    SpendSummary,
    Usage,
)
from corl_graph.budget._rows import (
    audit_entry,
    new_reservation,
    settle_entries,
    sum_summaries,
    validate_lookup,
    validate_request,
    validate_usage,
)
from corl_graph.budget._tiers import TenantBudget, period_key

__all__ = ["InMemoryLedger"]


@dataclass(slots=True)
class _Tally:
    """Running spend of one query or one tenant period, kept up to date on every transition so
    that a reservation costs O(1) however many came before it."""

    settled: float = 0.0
    held: float = 0.0
    expired: float = 0.0
    calls: int = 0
    tokens: int = 0
    n_held: int = 0
    n_expired: int = 0

    def move(self, amount: float, *, src: str | None, dst: str | None) -> None:
        """Move a reservation's amount between the held and expired buckets (None = outside).

        Sums of floats drift in the last bits; a bucket that empties is reset to exactly 0."""
        if src == "held":
            self.n_held -= 1
            self.held = self.held - amount if self.n_held else 0.0
        elif src == "expired":
            self.n_expired -= 1
            self.expired = self.expired - amount if self.n_expired else 0.0
        if dst == "held":
            self.n_held += 1
            self.held += amount
        elif dst == "expired":
            self.n_expired += 1
            self.expired += amount

    def summary(self) -> SpendSummary:
        return SpendSummary(self.settled, self.held, self.expired, self.calls, self.tokens)


class InMemoryLedger:
    """A ``Ledger`` kept in a dict behind a lock.

    ``default_budget`` applies to tenants never passed to ``set_tenant``; with None, an unknown
    tenant is refused.

    >>> import asyncio
    >>> from corl_graph.budget import BudgetTier, ReservationRequest, Usage
    >>> ledger = InMemoryLedger(default_budget=TenantBudget("*", 1.0, "total"))
    >>> req = ReservationRequest("t", "q1", BudgetTier("low", 0.01), "gpt", 0.004, 100, 100)
    >>> r = asyncio.run(ledger.reserve(req))
    >>> asyncio.run(ledger.settle(r.id, Usage(100, 20, 0.001))).status
    'settled'
    """

    # its operations never suspend: callers need not shield them (see _holds.py)
    cancel_safe: ClassVar[bool] = True

    def __init__(
        self,
        *,
        default_budget: TenantBudget | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self._default = default_budget
        self._clock = clock
        self._lock = threading.Lock()
        self._tenants: dict[str, TenantBudget] = {}
        self._defaulted: dict[str, TenantBudget] = {}  # default_budget, per tenant it served
        self._reservations: dict[str, Reservation] = {}
        self._tokens: dict[str, int] = {}  # worst case while held, real once settled
        # Per-query caps belong to one tenant: (tenant, query id), so two tenants that pick the
        # same query id never share (or see) a cap.
        self._by_query: dict[tuple[str, str], _Tally] = {}
        self._query_tenants: dict[str, set[str]] = {}
        self._by_tenant: dict[tuple[str, str], _Tally] = {}
        self._audit: list[AuditEntry] = []

    async def set_tenant(self, budget: TenantBudget) -> None:
        with self._lock:
            self._tenants[budget.tenant] = budget

    def _budget(self, tenant: str) -> TenantBudget:
        budget = self._tenants.get(tenant)
        if budget is not None:
            return budget
        budget = self._defaulted.get(tenant)
        if budget is not None:
            return budget
        if self._default is None:
            raise UnknownTenantError(
                f"tenant {tenant!r} has no budget; call ledger.set_tenant(TenantBudget({tenant!r},"
                " limit_usd=..., period=...)) or give the ledger a default_budget"
            )
        # Built once per tenant, not on every reserve (dataclasses.replace re-validates).
        budget = self._defaulted[tenant] = replace(self._default, tenant=tenant)
        return budget

    def _tallies(self, r: Reservation) -> tuple[_Tally, _Tally]:
        key = (r.tenant, r.period)
        tenant = self._by_tenant.get(key)
        if tenant is None:
            tenant = self._by_tenant[key] = _Tally()
        return self._query_tally(r.tenant, r.query_id), tenant

    def _query_tally(self, tenant: str, query_id: str) -> _Tally:
        tally = self._by_query.get((tenant, query_id))
        if tally is None:
            tally = self._by_query[(tenant, query_id)] = _Tally()
            self._query_tenants.setdefault(query_id, set()).add(tenant)
        return tally

    def _log(self, event: AuditEvent, r: Reservation, **detail: Any) -> None:
        self._audit.append(audit_entry(event, r, self._clock(), **detail))

    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation:
        validate_request(request, reservation_id)
        rid = reservation_id or uuid.uuid4().hex
        now = self._clock()
        with self._lock:
            if rid in self._reservations:
                return self._reservations[rid]
            budget = self._budget(request.tenant)
            period = period_key(budget.period, now)
            stored = new_reservation(request, rid, now, period)
            candidate = stored.reservation
            query, tenant = self._tallies(candidate)
            try:
                check_caps(request, query=query.summary(), tenant=tenant.summary(), budget=budget)
            except Exception as exc:
                self._log("denied", candidate, detail=str(exc))
                raise
            self._reservations[rid] = candidate
            self._tokens[rid] = stored.tokens
            for tally in (query, tenant):
                tally.move(request.amount_usd, src=None, dst="held")
                tally.calls += 1
                tally.tokens += stored.tokens
            self._log("reserved", candidate, input_tokens=request.input_tokens)
            return candidate

    def _get(self, reservation_id: str) -> Reservation:
        try:
            return self._reservations[reservation_id]
        except KeyError:
            raise ConfigError(f"no reservation with id {reservation_id!r}") from None

    async def settle(self, reservation_id: str, usage: Usage) -> Reservation:
        validate_usage(reservation_id, usage)
        with self._lock:
            r = self._get(reservation_id)
            if r.status in ("settled", "released"):
                return r
            settled = r.with_status("settled")
            self._reservations[r.id] = settled
            real_tokens = usage.input_tokens + usage.output_tokens
            for tally in self._tallies(r):
                tally.move(r.amount_usd, src=r.status, dst=None)
                tally.settled += usage.cost_usd
                tally.tokens += real_tokens - self._tokens[r.id]
            self._tokens[r.id] = real_tokens
            self._audit += settle_entries(settled, usage, self._clock(), r.amount_usd)
            return settled

    async def release(self, reservation_id: str) -> Reservation:
        validate_lookup(reservation_id=reservation_id)
        with self._lock:
            r = self._get(reservation_id)
            if r.status in ("settled", "released"):
                return r
            released = r.with_status("released")
            self._reservations[r.id] = released
            for tally in self._tallies(r):
                tally.move(r.amount_usd, src=r.status, dst=None)
                tally.calls -= 1
                tally.tokens -= self._tokens[r.id]
            self._log("released", released, amount_usd=0.0)
            return released

    async def query_spend(self, query_id: str, *, tenant: str | None = None) -> SpendSummary:
        validate_lookup(query_id=query_id, tenant=tenant)
        with self._lock:
            tenants = [tenant] if tenant is not None else self._query_tenants.get(query_id, ())
            return sum_summaries(
                self._by_query.get((t, query_id), _Tally()).summary() for t in tenants
            )

    async def tenant_spend(self, tenant: str, *, at: float | None = None) -> SpendSummary:
        validate_lookup(tenant=tenant)
        with self._lock:
            period = period_key(self._budget(tenant).period, self._clock() if at is None else at)
            return self._by_tenant.get((tenant, period), _Tally()).summary()

    async def reconcile(self, *, now: float | None = None) -> ReconcileReport:
        now = self._clock() if now is None else now
        expired: list[str] = []
        total = 0.0
        with self._lock:
            for r in list(self._reservations.values()):
                if r.status == "held" and r.expires_at <= now:
                    gone = r.with_status("expired")
                    self._reservations[r.id] = gone
                    for tally in self._tallies(r):
                        tally.move(r.amount_usd, src="held", dst="expired")
                    self._log("expired", gone, detail="lease ran out; charged at reserved amount")
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
        with self._lock:
            return [
                e
                for e in self._audit
                if (tenant is None or e.tenant == tenant)
                and (query_id is None or e.query_id == query_id)
                and (since is None or e.at >= since)
            ]

    async def aclose(self) -> None:
        return None
