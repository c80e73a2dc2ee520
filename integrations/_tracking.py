"""TrackingLedger: a ledger wrapper that knows which reservations this process holds open.

On shutdown the server settles exactly those at their reserved amount. It must not call
``reconcile(now=<future>)`` for that: with replicas sharing PostgreSQL, that would expire
the other replicas' in-flight reservations too.
"""

from __future__ import annotations

import threading

from corl_graph.budget import (
    AuditEntry,
    Ledger,
    ReconcileReport,
    Reservation,
    ReservationRequest,
    SpendSummary,
    TenantBudget,
    Usage,
)

__all__ = ["TrackingLedger"]


class TrackingLedger:
    """Delegates to ``inner`` and remembers the reservations it holds until they are closed.

    >>> import asyncio
    >>> from corl_graph.budget import InMemoryLedger
    >>> ledger = TrackingLedger(InMemoryLedger(default_budget=TenantBudget("*", 1.0)))
    >>> asyncio.run(ledger.settle_open())
    0
    """

    def __init__(self, inner: Ledger):
        self.inner = inner
        self._open: dict[str, ReservationRequest] = {}
        self._lock = threading.Lock()  # the server may run the router on several loops

    @property
    def open_reservations(self) -> list[str]:
        with self._lock:
            return list(self._open)

    async def settle_open(self, *, reason: str = "shutdown") -> int:
        """Settle every reservation still open at its worst case; returns how many."""
        with self._lock:
            pending = list(self._open.items())
        for rid, request in pending:
            usage = Usage(
                request.input_tokens, request.max_output_tokens, request.amount_usd, estimated=True
            )
            await self.settle(rid, usage)
        return len(pending)

    async def set_tenant(self, budget: TenantBudget) -> None:
        await self.inner.set_tenant(budget)

    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation:
        reservation = await self.inner.reserve(request, reservation_id=reservation_id)
        with self._lock:
            self._open[reservation.id] = request
        return reservation

    async def settle(self, reservation_id: str, usage: Usage) -> Reservation:
        reservation = await self.inner.settle(reservation_id, usage)
        self._forget(reservation_id)
        return reservation

    async def release(self, reservation_id: str) -> Reservation:
        reservation = await self.inner.release(reservation_id)
        self._forget(reservation_id)
        return reservation

    async def query_spend(self, query_id: str, *, tenant: str | None = None) -> SpendSummary:
        return await self.inner.query_spend(query_id, tenant=tenant)

    async def tenant_spend(self, tenant: str, *, at: float | None = None) -> SpendSummary:
        return await self.inner.tenant_spend(tenant, at=at)

    async def reconcile(self, *, now: float | None = None) -> ReconcileReport:
        return await self.inner.reconcile(now=now)

    async def audit(
        self,
        *,
        tenant: str | None = None,
        query_id: str | None = None,
        since: float | None = None,
    ) -> list[AuditEntry]:
        return await self.inner.audit(tenant=tenant, query_id=query_id, since=since)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _forget(self, reservation_id: str) -> None:
        with self._lock:
            self._open.pop(reservation_id, None)
