"""Budget holds: how a run's expert calls are held on the ledger, one abstraction, three ways.

A ``BudgetHold`` belongs to a router (it knows the ledger, and with "leased" the router's
slices); ``hold.for_run()`` gives the ``RunHold`` of one run, which is per-run state: it travels
with the run (``RouterContext.hold``) and the run's owner closes it when the run ends::

    PerAttemptHold   every attempt:  ledger.reserve(worst case) ─ call ─ ledger.settle(real)
    PerQueryHold     first call:     ledger.reserve(envelope = tier cap)
                     every attempt:  envelope.reserve ─ call ─ envelope.settle   (in memory)
                     run ends:       ledger.settle(envelope, sum of the calls)    (close)
    LeasedHold       as PerQueryHold, the envelope carved from a per-tenant slice held on the
                     ledger (``BudgetLeases``): two ledger operations per slice, not per query

A run hold's ``reserve`` / ``settle`` / ``release`` behave as a ledger's and are safe to use
from a call that may be cancelled: a ledger operation that can suspend runs shielded (a
cancelled caller never abandons a settle half way; a reservation granted after its caller was
cancelled is released again) and is retried after a ``LedgerError``, since every operation is
idempotent by reservation id. Targets whose operations never suspend (the in-memory ledger,
an envelope, budget leases: ``cancel_safe = True``) are awaited directly, without the task and
event-loop round that shielding costs.

An envelope the ledger refuses (a tenant with less than a whole cap left) makes the run hold
per attempt from then on; an unreachable ledger is left to the attempt, which fails closed.
"""

from __future__ import annotations

import asyncio
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal

from corl_graph._exceptions import BudgetExceededError, ConfigError, LedgerError
from corl_graph.budget._envelope import QueryEnvelope, envelope_request
from corl_graph.budget._leases import BudgetLeases
from corl_graph.budget._ledger import Ledger, Reservation, ReservationRequest, Usage

__all__ = [
    "BudgetHold",
    "HoldMode",
    "LeasedHold",
    "PerAttemptHold",
    "PerQueryHold",
    "RunHold",
    "make_hold",
]

HoldMode = Literal["per_attempt", "per_query", "leased"]

# Settle / release after a lost ledger connection: tries and first back-off.
_LEDGER_TRIES = 3
_LEDGER_BACKOFF_S = 0.05
# How long a failed run may spend settling its envelope before giving up (it then expires
# charged at the whole cap).
_ABORT_SETTLE_S = 5.0
# The shortest lease of a budget slice (LeasedHold).
_MIN_SLICE_LEASE_S = 300.0
# How long past a run's expected end a slice outlives the envelopes carved from it.
_SLICE_MARGIN_S = 60.0

# Where a reservation is made: a ledger, an envelope or budget leases (all ledger-shaped).
_Target = Ledger | QueryEnvelope | BudgetLeases
_pending: set[asyncio.Task[Any]] = set()  # strong references to background releases


class RunHold(ABC):
    """One run's view of its budget hold: ``reserve`` / ``settle`` / ``release`` of single
    attempts, as a ledger's, and ``close`` / ``abort`` when the run ends."""

    @abstractmethod
    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation: ...

    @abstractmethod
    async def settle(self, reservation_id: str, usage: Usage) -> Reservation: ...

    @abstractmethod
    async def release(self, reservation_id: str) -> Reservation: ...

    @abstractmethod
    async def close(self) -> None:
        """The run answered: settle what it holds beyond single attempts (an envelope)."""

    @abstractmethod
    async def abort(self) -> None:
        """The run raised or was cancelled: ``close``, best effort and bounded in time (what is
        left held expires charged at its whole amount, never less)."""


class BudgetHold(ABC):
    """How a router's runs hold their calls on ``ledger``; ``for_run`` gives one run's hold.

    ``per_attempt`` holds every attempt on the ledger itself; it keeps nothing of its own, so
    one serves every run (and runs that have no hold of their own).
    """

    mode: HoldMode

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.per_attempt: RunHold = _LedgerRun(ledger)

    @abstractmethod
    def for_run(self) -> RunHold:
        """A fresh hold for one run (cheap: nothing touches the ledger before a call)."""

    def open_usd(self, tenant: str) -> float:
        """Dollars this hold keeps committed on the ledger for ``tenant`` beyond its runs'
        calls (the unused room of open budget slices); a pre-check may discount them."""
        return 0.0

    @abstractmethod
    async def aclose(self) -> None:
        """Settle what is held beyond single runs (budget slices). Safe to call twice."""


class PerAttemptHold(BudgetHold):
    """Every attempt reserved and settled on the ledger itself (the default).

    >>> import asyncio
    >>> from corl_graph.budget import (
    ...     BudgetTier, InMemoryLedger, ReservationRequest, TenantBudget, Usage)
    >>> ledger = InMemoryLedger(default_budget=TenantBudget("*", 1.0, "total"))
    >>> hold = PerAttemptHold(ledger).for_run()
    >>> async def one_call():
    ...     req = ReservationRequest("acme", "run-1", BudgetTier("low", 0.01), "gpt", 0.002, 9, 9)
    ...     r = await hold.reserve(req)
    ...     return (await hold.settle(r.id, Usage(9, 3, 0.001))).status
    >>> asyncio.run(one_call())
    'settled'
    """

    mode: HoldMode = "per_attempt"

    def for_run(self) -> RunHold:
        return self.per_attempt

    async def aclose(self) -> None:
        return None  # nothing is held beyond single attempts


class PerQueryHold(BudgetHold):
    """A run's tier cap held once on the ledger at its first call (an *envelope*), its
    attempts carved from it in memory, settled once when the run ends. ``lease_s`` is how long
    the ledger keeps an envelope whose holder died before it expires (charged in full)."""

    mode: HoldMode = "per_query"

    def __init__(self, ledger: Ledger, *, lease_s: float) -> None:
        super().__init__(ledger)
        self.lease_s = lease_s

    def _source(self) -> Ledger | BudgetLeases:
        return self.ledger

    def for_run(self) -> RunHold:
        return _EnvelopeRun(self._source(), self.per_attempt, self.lease_s)

    async def aclose(self) -> None:
        return None  # envelopes are closed by their runs


class LeasedHold(PerQueryHold):
    """Per-query envelopes carved from per-tenant slices of ``slice_usd`` held on the ledger
    (``leases``, a ``BudgetLeases``); ``aclose`` settles the open slices."""

    mode: HoldMode = "leased"

    def __init__(self, ledger: Ledger, *, lease_s: float, slice_usd: float) -> None:
        super().__init__(ledger, lease_s=lease_s)
        # a slice is closed once it is half its lease old, so every envelope carved from it
        # (at most lease_s long) ends before the slice can expire
        slice_lease_s = max(_MIN_SLICE_LEASE_S, 2 * lease_s + _SLICE_MARGIN_S)
        self.leases = BudgetLeases(ledger, slice_usd=slice_usd, lease_s=slice_lease_s)

    def _source(self) -> Ledger | BudgetLeases:
        return self.leases

    def open_usd(self, tenant: str) -> float:
        return self.leases.open_usd(tenant)

    async def aclose(self) -> None:
        await self.leases.aclose()


def make_hold(
    mode: HoldMode, ledger: Ledger, *, envelope_lease_s: float, slice_usd: float = 1.0
) -> BudgetHold:
    """The hold of ``RouterConfig.budget_hold``."""
    if mode == "per_attempt":
        return PerAttemptHold(ledger)
    if mode == "per_query":
        return PerQueryHold(ledger, lease_s=envelope_lease_s)
    if mode == "leased":
        return LeasedHold(ledger, lease_s=envelope_lease_s, slice_usd=slice_usd)
    raise ConfigError(f"budget_hold must be 'per_attempt', 'per_query' or 'leased', got {mode!r}")


class _LedgerRun(RunHold):
    """Attempts reserved on ``ledger`` (or another ledger-shaped target) one by one."""

    def __init__(self, target: _Target) -> None:
        self.target = target
        # A target that never suspends is awaited directly (see _guarded): decided once here,
        # not on every attempt of every call.
        self._direct = bool(getattr(target, "cancel_safe", False))

    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation:
        rid = reservation_id or uuid.uuid4().hex
        if self._direct:
            return await self.target.reserve(request, reservation_id=rid)
        return await _reserve(self.target, request, rid)

    async def settle(self, reservation_id: str, usage: Usage) -> Reservation:
        target = self.target
        if self._direct:
            return await target.settle(reservation_id, usage)
        return await _guarded(target, lambda: target.settle(reservation_id, usage))

    async def release(self, reservation_id: str) -> Reservation:
        target = self.target
        if self._direct:
            return await target.release(reservation_id)
        return await _guarded(target, lambda: target.release(reservation_id))

    async def close(self) -> None:
        return None  # every attempt was settled or released by its call

    async def abort(self) -> None:
        return None


class _EnvelopeRun(RunHold):
    """One run's envelope, reserved from ``source`` at its first call; per attempt on the
    ledger (``per_attempt``) if the envelope is refused."""

    def __init__(self, source: Ledger | BudgetLeases, per_attempt: RunHold, lease_s: float):
        self._source = source
        self._per_attempt = per_attempt
        self._lease_s = lease_s
        self._envelope: QueryEnvelope | None = None
        self._refused = False
        self._where: dict[str, RunHold | QueryEnvelope] = {}  # reservation id -> its holder

    async def _holder(self, request: ReservationRequest) -> RunHold | QueryEnvelope:
        if self._envelope is not None:
            return self._envelope
        if self._refused:
            return self._per_attempt
        source = self._source
        envelope = envelope_request(request.tenant, request.run_id, request.tier, self._lease_s)
        try:
            reservation = await _reserve(source, envelope, uuid.uuid4().hex)
        except BudgetExceededError:
            self._refused = True
            return self._per_attempt
        except LedgerError:  # left to the attempt, which fails closed; the next call retries
            return self._per_attempt
        self._envelope = QueryEnvelope(reservation)
        return self._envelope

    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation:
        holder = await self._holder(request)
        reservation = await holder.reserve(request, reservation_id=reservation_id)
        self._where[reservation.id] = holder
        return reservation

    async def settle(self, reservation_id: str, usage: Usage) -> Reservation:
        return await self._where.pop(reservation_id).settle(reservation_id, usage)

    async def release(self, reservation_id: str) -> Reservation:
        return await self._where.pop(reservation_id).release(reservation_id)

    async def close(self) -> None:
        envelope, self._envelope = self._envelope, None
        if envelope is not None:
            source, usage = self._source, envelope.usage()
            await _guarded(source, lambda: source.settle(envelope.reservation.id, usage))

    async def abort(self) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self.close()), _ABORT_SETTLE_S)
        except (LedgerError, TimeoutError, asyncio.CancelledError):
            return  # left HELD: it expires charged at the whole cap


async def _reserve(target: _Target, request: ReservationRequest, rid: str) -> Reservation:
    """Reserve with one id for every try (a retried reserve cannot hold twice)."""

    def release_if_held(task: asyncio.Future[Reservation]) -> None:
        # Cancelled while reserving: nobody will call, so give the hold back once it lands.
        if not task.cancelled() and task.exception() is None:
            _background(target.release(rid))

    return await _guarded(
        target, lambda: target.reserve(request, reservation_id=rid), on_cancel=release_if_held
    )


def _background(op: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.ensure_future(op)
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no warning


async def _guarded(
    target: _Target,
    op: Callable[[], Awaitable[Reservation]],
    *,
    on_cancel: Callable[[asyncio.Future[Reservation]], None] | None = None,
) -> Reservation:
    """Run an idempotent ledger operation; retry it after a ``LedgerError``, then give up.

    Shielded: a cancelled caller must not abandon a settle half way (the operation finishes
    in the background and the ledger stays consistent either way); ``on_cancel`` is called
    when that background operation is done. A target whose operations never suspend
    (``cancel_safe``) is awaited directly: no cancellation can land inside one.
    """
    if getattr(target, "cancel_safe", False):
        return await op()
    for attempt in range(_LEDGER_TRIES):
        task = asyncio.ensure_future(op())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if on_cancel is not None:
                task.add_done_callback(on_cancel)
            raise
        except LedgerError:
            if attempt == _LEDGER_TRIES - 1:
                raise
            await asyncio.sleep(_LEDGER_BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")  # the loop returns or raises
