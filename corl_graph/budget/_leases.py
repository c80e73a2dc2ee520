"""Budget leases: hold a slice of a tenant's budget on a durable ledger once, carve many
reservations out of it in memory.

A durable ledger commits every reserve and settle (an fsync for SQLite, two round trips for
PostgreSQL), which costs more than the rest of a routed query. ``BudgetLeases`` puts one
durable reservation (a *slice*, ``slice_usd``) in front of many in-memory ones::

    ledger:   reserve(slice $0.50) ──────────────────────────────────── settle(sum of queries)
    memory:        └ reserve q1 ─ reserve q2 ─ settle q1 ─ … ─ settle qN ┘

What still holds: a reservation is carved only from room left in its tenant's slice, and the
slice was checked against the tenant's limit when the ledger granted it, so no tenant
overspends; the per-query caps are checked by whoever carves (the router's per-query
envelope). A process that dies leaves its slices HELD; they expire charged at the whole
slice: spend is over-counted by at most one slice per tenant and process, never under.

What it costs: the tenant sees whole slices as committed while they are open; the ledger's
audit trail has one line pair per slice (per-query detail is in the trajectories and spans);
a slice is retired when it is full, half its lease old or its budget period (day, month)
has ended, settled once its last reservation is, and by ``aclose``,
so call ``await router.aclose()`` on shutdown. Near the end of a tenant's budget a slice the
ledger refuses is retried at the size of the request itself, so the last dollars are
still usable.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

from corl_graph._exceptions import BudgetExceededError, ConfigError, LedgerError
from corl_graph.budget._ledger import Ledger, Reservation, ReservationRequest, Usage
from corl_graph.budget._tiers import BudgetTier, Period, period_key

__all__ = ["LEASE_EXPERT", "BudgetLeases"]

# The expert (and tier) name of a slice in the durable ledger and its audit trail.
LEASE_EXPERT = "corl:budget-lease"
_LEASE_TIER = "corl-lease"
# Float sums of prices drift in the last bits (as in check_caps).
_EPS = 1e-12
# How many closed reservation ids are remembered for idempotent retries of settle/release.
_DONE_KEPT = 8192


@dataclass(slots=True, eq=False)
class _Slice:
    reservation: Reservation
    born: float
    settled_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    open: dict[str, Reservation] = field(default_factory=dict)
    retired: bool = False

    def room(self) -> float:
        """What is left to carve: the slice less settled costs and open reservations."""
        held = sum(r.amount_usd for r in self.open.values())
        return self.reservation.amount_usd - self.settled_usd - held

    def usage(self) -> Usage:
        """What to settle the slice with: settled costs, and anything still open at its
        reserved amount (only reached by ``aclose`` with reservations in flight)."""
        held = sum(r.amount_usd for r in self.open.values())
        return Usage(
            self.input_tokens,
            self.output_tokens,
            self.settled_usd + held,
            estimated=self.estimated or bool(self.open),
        )


class BudgetLeases:
    """Reservations carved in memory from per-tenant slices held on ``ledger``.

    ``reserve`` / ``settle`` / ``release`` behave as a ledger's for the reservations it
    carves (idempotent by id); only opening and closing a slice touches ``ledger``. Its
    operations are cancel-safe: the in-memory part never suspends, and the ledger operations
    behind it run shielded, so a cancelled caller never leaves a slice half opened or closed.

    >>> import asyncio
    >>> from corl_graph.budget import InMemoryLedger, TenantBudget, BudgetTier, Usage
    >>> from corl_graph.budget import ReservationRequest
    >>> async def demo():
    ...     ledger = InMemoryLedger()
    ...     await ledger.set_tenant(TenantBudget("acme", 10.0, "day"))
    ...     leases = BudgetLeases(ledger, slice_usd=1.0)
    ...     tier = BudgetTier("low", 0.01)
    ...     r = await leases.reserve(ReservationRequest("acme", "q1", tier, "gpt", 0.01, 10, 10))
    ...     await leases.settle(r.id, Usage(10, 5, 0.004))
    ...     held = (await ledger.tenant_spend("acme")).held_usd  # the open slice
    ...     await leases.aclose()
    ...     return held, round((await ledger.tenant_spend("acme")).settled_usd, 6)
    >>> asyncio.run(demo())
    (1.0, 0.004)
    """

    # its in-memory part never suspends and its ledger work runs shielded (see _holds.py)
    cancel_safe: ClassVar[bool] = True

    def __init__(self, ledger: Ledger, *, slice_usd: float, lease_s: float = 300.0) -> None:
        if not (isinstance(slice_usd, int | float) and slice_usd > 0):
            raise ConfigError(f"slice_usd must be a number of dollars > 0, got {slice_usd!r}")
        if not (isinstance(lease_s, int | float) and lease_s > 0):
            raise ConfigError(f"lease_s must be a number of seconds > 0, got {lease_s!r}")
        self.ledger = ledger
        self.slice_usd = float(slice_usd)
        self.lease_s = float(lease_s)
        self._current: dict[str, _Slice] = {}  # tenant -> the slice new reservations use
        self._by_id: dict[str, _Slice] = {}  # open reservation id -> its slice
        # closed reservations, for idempotent retries (the most recent _DONE_KEPT)
        self._done: dict[str, Reservation] = {}
        self._slices: dict[int, _Slice] = {}
        self._unsettled: list[_Slice] = []  # closing failed on the ledger: retried later
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self.slices_opened = 0
        self.slices_closed = 0

    # -- the ledger-like half ------------------------------------------------------------------

    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation:
        """Carve ``request.amount_usd`` from the tenant's slice, opening a new slice on the
        ledger when the current one has no room (``BudgetExceededError`` if the ledger refuses
        even a slice of the request's size; ``LedgerError`` if it fails)."""
        rid = reservation_id or uuid.uuid4().hex
        known = self._by_id.get(rid)
        if known is not None:
            return known.open[rid]
        if rid in self._done:
            return self._done[rid]
        slice_ = self._usable(request.tenant, request.amount_usd)
        if slice_ is None:
            slice_ = await self._open_slice(request)
        return self._carve(slice_, request, rid)

    async def settle(self, reservation_id: str, usage: Usage) -> Reservation:
        slice_, reservation = self._close(reservation_id)
        if slice_ is None:
            return reservation
        slice_.settled_usd += usage.cost_usd
        slice_.input_tokens += usage.input_tokens
        slice_.output_tokens += usage.output_tokens
        slice_.estimated = slice_.estimated or usage.estimated
        done = self._remember(reservation.with_status("settled"))
        await self._maybe_close(slice_)
        return done

    async def release(self, reservation_id: str) -> Reservation:
        slice_, reservation = self._close(reservation_id)
        if slice_ is None:
            return reservation
        done = self._remember(reservation.with_status("released"))
        await self._maybe_close(slice_)
        return done

    async def aclose(self) -> None:
        """Settle every slice at what was carved from it (reservations still open count at
        their reserved amount). Slices the ledger cannot settle now stay HELD and expire
        charged at their whole amount; ``LedgerError`` says so."""
        for slice_ in list(self._slices.values()):
            slice_.retired = True
        self._current.clear()
        failed: list[_Slice] = []
        for slice_ in [*self._unsettled, *self._slices.values()]:
            try:
                await self._settle_slice(slice_)
            except LedgerError:
                failed.append(slice_)
        self._unsettled = failed  # a later aclose tries them again
        self._slices.clear()
        if failed:
            raise LedgerError(
                f"{len(failed)} budget lease slice(s) could not be settled; until a later "
                "aclose settles them they stay charged at their whole amount"
            )

    # -- introspection -------------------------------------------------------------------------

    def open_usd(self, tenant: str) -> float:
        """Dollars held in ``tenant``'s open slices that nothing has used yet."""
        return sum(s.room() for s in self._slices.values() if s.reservation.tenant == tenant)

    # -- internals -----------------------------------------------------------------------------

    def _usable(self, tenant: str, amount: float) -> _Slice | None:
        slice_ = self._current.get(tenant)
        if slice_ is None:
            return None
        if self._too_old(slice_) or slice_.room() + _EPS < amount:
            self._retire(slice_)
            return None
        return slice_

    def _too_old(self, slice_: _Slice) -> bool:
        """Half its lease gone, or its budget period (day, month) over: no new carving."""
        return time.monotonic() - slice_.born > self.lease_s / 2 or _period_ended(slice_)

    def _retire(self, slice_: _Slice) -> None:
        slice_.retired = True
        if self._current.get(slice_.reservation.tenant) is slice_:
            del self._current[slice_.reservation.tenant]
        if not slice_.open:
            # closed by the next operation that awaits (or aclose): reserve must stay in memory
            self._unsettled.append(slice_)
            self._slices.pop(id(slice_), None)

    async def _open_slice(self, request: ReservationRequest) -> _Slice:
        # one lock per tenant and event loop (Router.run starts a loop per call)
        key = (request.tenant, id(asyncio.get_running_loop()))
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            # another caller may have opened one while this one waited
            slice_ = self._usable(request.tenant, request.amount_usd)
            if slice_ is not None:
                return slice_
            task = asyncio.ensure_future(self._acquire(request))
            return await asyncio.shield(task)  # a cancelled caller leaves the slice registered

    async def _acquire(self, request: ReservationRequest) -> _Slice:
        await self._flush_unsettled()
        size = max(self.slice_usd, request.amount_usd)
        try:
            reservation = await self._reserve_slice(request, size)
        except BudgetExceededError:
            if size <= request.amount_usd + _EPS:
                raise
            # near the end of the tenant's budget: a slice just big enough for this request
            reservation = await self._reserve_slice(request, request.amount_usd)
        slice_ = _Slice(reservation, time.monotonic())
        self._current[request.tenant] = slice_
        self._slices[id(slice_)] = slice_
        self.slices_opened += 1
        return slice_

    async def _reserve_slice(self, request: ReservationRequest, size: float) -> Reservation:
        lease_id = uuid.uuid4().hex
        slice_request = ReservationRequest(
            tenant=request.tenant,
            run_id=f"corl-lease-{lease_id}",
            tier=BudgetTier(_LEASE_TIER, size),
            expert=LEASE_EXPERT,
            amount_usd=size,
            input_tokens=0,
            max_output_tokens=0,
            lease_s=self.lease_s,
        )
        return await self.ledger.reserve(slice_request, reservation_id=lease_id)

    def _carve(self, slice_: _Slice, request: ReservationRequest, rid: str) -> Reservation:
        now = time.time()
        s = slice_.reservation
        reservation = Reservation(
            id=rid,
            tenant=request.tenant,
            query_id=request.run_id,
            tier=request.tier.name,
            expert=request.expert,
            amount_usd=request.amount_usd,
            created_at=now,
            expires_at=now + request.lease_s,
            period=s.period,
        )
        slice_.open[rid] = reservation
        self._by_id[rid] = slice_
        if slice_.room() <= _EPS:
            self._retire(slice_)
        return reservation

    def _remember(self, done: Reservation) -> Reservation:
        self._done[done.id] = done
        if len(self._done) > _DONE_KEPT:
            del self._done[next(iter(self._done))]
        return done

    def _close(self, reservation_id: str) -> tuple[_Slice | None, Reservation]:
        slice_ = self._by_id.pop(reservation_id, None)
        if slice_ is None:
            if reservation_id in self._done:
                return None, self._done[reservation_id]
            raise ConfigError(f"no reservation {reservation_id!r} in these budget leases")
        return slice_, slice_.open.pop(reservation_id)

    async def _maybe_close(self, slice_: _Slice) -> None:
        if slice_.open:
            return
        if not slice_.retired and self._too_old(slice_):
            self._retire(slice_)
        if not slice_.retired:
            return
        self._slices.pop(id(slice_), None)

        async def close() -> None:
            await self._flush_unsettled()  # earlier failures first; this one, if it fails,
            await self._settle_or_keep(slice_)  # waits for a later operation

        await asyncio.shield(asyncio.ensure_future(close()))

    async def _settle_or_keep(self, slice_: _Slice) -> None:
        try:
            await self._settle_slice(slice_)
        except LedgerError:
            self._unsettled.append(slice_)  # stays charged at its whole amount until retried

    async def _flush_unsettled(self) -> None:
        while self._unsettled:
            slice_ = self._unsettled.pop(0)
            await self._settle_or_keep(slice_)
            if self._unsettled and self._unsettled[-1] is slice_:
                return  # the ledger still fails: try again on a later operation

    async def _settle_slice(self, slice_: _Slice) -> None:
        await self.ledger.settle(slice_.reservation.id, slice_.usage())
        self.slices_closed += 1


def _period_ended(slice_: _Slice) -> bool:
    """The tenant's budget period the slice was charged to is over (a new day or month):
    what is spent from now on belongs to the new period's budget, so a new slice is needed."""
    key = slice_.reservation.period  # period_key's format: "total", "YYYY-MM-DD" or "YYYY-MM"
    kinds: dict[int, Period] = {10: "day", 7: "month"}
    kind = kinds.get(len(key)) if key != "total" else None
    return kind is not None and period_key(kind) != key
