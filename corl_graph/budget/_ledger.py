"""The ledger protocol: reserve the worst case before a call, settle the real cost after.

Life of a reservation::

    reserve(request) ──► HELD ──settle(usage)──► SETTLED   (charged: the real cost)
                           │ ──release()──────► RELEASED   (charged: 0, the call was never sent)
                           └─ lease runs out ─► EXPIRED    (charged: the reserved amount)
                                                  └─settle(usage)──► SETTLED (late settle)

Every operation is idempotent by reservation id: a retried ``reserve`` returns the same
reservation, a retried ``settle`` or ``release`` changes nothing. Spend is never
under-counted: a reservation whose holder died stays charged at its reserved amount.

What counts against a cap ("committed" spend) is, per query and per tenant period:
settled cost + the amount of every HELD or EXPIRED reservation. A query is one tenant's:
two tenants that use the same query id have separate per-query caps.

Every input is checked where it is built (``ReservationRequest``, ``Usage``), so no backend
ever stores a NaN, an infinity, a negative amount or an unbounded id: amounts and lease
durations must be finite and >= 0, token counts whole numbers in [0, ``MAX_TOKENS``], ids
1 to ``MAX_ID_CHARS`` printable characters. A bad value raises ``ConfigError`` naming the
field. ``provider_usage`` turns what a provider *reported* (which may be anything) into a
valid ``Usage``, charging the reserved worst case when the report is impossible.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, overload, runtime_checkable

from corl_graph._exceptions import ConfigError
from corl_graph.budget._checks import (
    MAX_ID_CHARS,
    MAX_TOKENS,
    check_amount,
    check_id,
    check_tokens,
)
from corl_graph.budget._tiers import BudgetTier, TenantBudget

__all__ = [
    "MAX_ID_CHARS",
    "MAX_TOKENS",
    "AuditEntry",
    "AuditEvent",
    "Ledger",
    "ReconcileReport",
    "Reservation",
    "ReservationRequest",
    "ReservationStatus",
    "SpendSummary",
    "Usage",
    "check_amount",
    "check_id",
    "check_tokens",
    "provider_usage",
]

ReservationStatus = Literal["held", "settled", "released", "expired"]
AuditEvent = Literal[
    "reserved", "settled", "released", "expired", "denied", "overrun", "invalid_usage"
]


@dataclass(frozen=True, slots=True, init=False)
class ReservationRequest:
    """What a caller asks the ledger to hold before an expert call.

    ``amount_usd`` is the worst case: input tokens + ``max_output_tokens`` at the expert's price.
    ``run_id`` names one run of a query, the unit a tier's per-query caps apply to: the
    router passes its run id (``RouterResult.run_id``, the query id and a random suffix), so
    two runs of one query id, such as GRPO's generations, each get the whole cap. The
    ledger's records keep it under their historical name ``query_id`` (``Reservation``,
    ``AuditEntry``, ``query_spend``). ``query_id=`` is a deprecated alias of ``run_id``.

    >>> r = ReservationRequest("acme", "q1:run-1", BudgetTier("low", 0.01), "gpt", 0.004, 9, 9)
    >>> r.run_id
    'q1:run-1'
    """

    tenant: str
    run_id: str
    tier: BudgetTier
    expert: str
    amount_usd: float
    input_tokens: int
    max_output_tokens: int
    lease_s: float

    @overload
    def __init__(
        self,
        tenant: str,
        run_id: str,
        tier: BudgetTier,
        expert: str,
        amount_usd: float,
        input_tokens: int,
        max_output_tokens: int,
        lease_s: float = 300.0,
    ) -> None: ...

    @overload
    def __init__(
        self,
        tenant: str,
        *,
        query_id: str,
        tier: BudgetTier,
        expert: str,
        amount_usd: float,
        input_tokens: int,
        max_output_tokens: int,
        lease_s: float = 300.0,
    ) -> None: ...

    def __init__(
        self,
        tenant: str,
        run_id: str | None = None,
        tier: BudgetTier | None = None,
        expert: str | None = None,
        amount_usd: float | None = None,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        lease_s: float = 300.0,
        *,
        query_id: str | None = None,
    ) -> None:
        if query_id is not None:
            if run_id is not None:
                raise ConfigError("ReservationRequest: pass run_id only (query_id is its old name)")
            warnings.warn(
                "ReservationRequest(query_id=...) is deprecated: the field is run_id",
                DeprecationWarning,
                stacklevel=2,
            )
            run_id = query_id
        if (
            run_id is None
            or tier is None
            or expert is None
            or amount_usd is None
            or input_tokens is None
            or max_output_tokens is None
        ):
            values = {
                "run_id": run_id,
                "tier": tier,
                "expert": expert,
                "amount_usd": amount_usd,
                "input_tokens": input_tokens,
                "max_output_tokens": max_output_tokens,
            }
            missing = [name for name, value in values.items() if value is None]
            raise TypeError(f"ReservationRequest() missing required arguments: {missing}")
        # One of these is built per attempt of every expert call: set the fields directly.
        put = object.__setattr__
        put(self, "tenant", tenant)
        put(self, "run_id", run_id)
        put(self, "tier", tier)
        put(self, "expert", expert)
        put(self, "amount_usd", amount_usd)
        put(self, "input_tokens", input_tokens)
        put(self, "max_output_tokens", max_output_tokens)
        put(self, "lease_s", lease_s)
        self.__post_init__()

    @property
    def query_id(self) -> str:
        """Deprecated: the old name of ``run_id``."""
        warnings.warn(
            "ReservationRequest.query_id is deprecated: read run_id",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.run_id

    def __post_init__(self) -> None:
        check_id(self.tenant, "tenant")
        check_id(self.run_id, "run_id")
        check_id(self.expert, "expert")
        check_amount(self.amount_usd, "amount_usd")
        check_tokens(self.input_tokens, "input_tokens")
        check_tokens(self.max_output_tokens, "max_output_tokens")
        check_amount(self.lease_s, "lease_s")


@dataclass(frozen=True, slots=True)
class Reservation:
    """A held amount; pass ``id`` to ``settle`` or ``release``."""

    id: str
    tenant: str
    query_id: str
    tier: str
    expert: str
    amount_usd: float
    created_at: float
    expires_at: float
    period: str
    status: ReservationStatus = "held"

    def with_status(self, status: ReservationStatus) -> Reservation:
        """The same reservation in another state (what settle / release return)."""
        return Reservation(
            id=self.id,
            tenant=self.tenant,
            query_id=self.query_id,
            tier=self.tier,
            expert=self.expert,
            amount_usd=self.amount_usd,
            created_at=self.created_at,
            expires_at=self.expires_at,
            period=self.period,
            status=status,
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """What a call really used. ``estimated`` is True when the provider reported no usage.

    ``flagged`` says why the provider's own report was not believed (see ``provider_usage``);
    a ledger writes it to the audit trail as an ``invalid_usage`` line.

    >>> Usage(10, -5, 0.001)
    Traceback (most recent call last):
    ...
    corl_graph._exceptions.ConfigError: output_tokens must be in [0, 1000000000], got -5
    """

    input_tokens: int
    output_tokens: int
    cost_usd: float
    estimated: bool = False
    flagged: str = ""

    def __post_init__(self) -> None:
        check_tokens(self.input_tokens, "input_tokens")
        check_tokens(self.output_tokens, "output_tokens")
        check_amount(self.cost_usd, "cost_usd")


def provider_usage(
    input_tokens: object,
    output_tokens: object,
    cost_usd: object,
    *,
    estimated: bool,
    reserved_usd: float,
    reserved_input_tokens: int,
    reserved_output_tokens: int,
) -> Usage:
    """The ``Usage`` to settle a call with, from what its provider reported.

    A report that cannot be true (negative, NaN, infinite, fractional or absurdly large
    counts or cost) is never trusted to *lower* a bill: the call is charged at its reserved
    worst case, and ``flagged`` says what was wrong, for the audit trail. A valid report is
    charged as reported, even above the reservation (an ``overrun``).

    >>> provider_usage(10, -1_000_000, -0.6, estimated=False, reserved_usd=0.01,
    ...                reserved_input_tokens=10, reserved_output_tokens=100).cost_usd
    0.01
    """
    try:
        return Usage(
            input_tokens,  # type: ignore[arg-type]  # checked by Usage itself
            output_tokens,  # type: ignore[arg-type]
            cost_usd,  # type: ignore[arg-type]
            estimated,
        )
    except ConfigError as exc:
        reason = (
            f"provider reported input_tokens={_short(input_tokens)}, "
            f"output_tokens={_short(output_tokens)}, cost_usd={_short(cost_usd)} ({exc}); "
            "charged at the reserved amount"
        )
    return Usage(reserved_input_tokens, reserved_output_tokens, reserved_usd, True, flagged=reason)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True, slots=True)
class SpendSummary:
    """Spend of one query or one tenant period.

    ``committed_usd`` = ``settled_usd`` + ``held_usd`` + ``expired_usd``: what counts against a cap.
    """

    settled_usd: float = 0.0
    held_usd: float = 0.0
    expired_usd: float = 0.0
    calls: int = 0
    tokens: int = 0

    @property
    def committed_usd(self) -> float:
        return self.settled_usd + self.held_usd + self.expired_usd


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit trail: who spent what, when, on which expert, for which query."""

    at: float
    event: AuditEvent
    reservation_id: str
    tenant: str
    query_id: str
    tier: str
    expert: str
    amount_usd: float
    input_tokens: int = 0
    output_tokens: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What ``reconcile`` did: reservations it expired, and the amount they stay charged at."""

    expired: Sequence[str] = field(default_factory=tuple)
    expired_usd: float = 0.0


@runtime_checkable
class Ledger(Protocol):
    """Where spend is reserved, settled and audited. Backends: memory, SQLite, PostgreSQL.

    ``reserve`` raises ``BudgetExceededError`` (scope "query", "tenant", "calls" or "tokens")
    *before* any money is spent, ``UnknownTenantError`` for a tenant it has no budget for,
    and ``LedgerError`` when its storage fails. See ``corl_graph.budget.open_ledger``.

    A backend whose operations never suspend may say so with a class attribute
    ``cancel_safe = True``; budget holds then await them directly instead of shielding them.
    """

    async def set_tenant(self, budget: TenantBudget) -> None:
        """Create or replace a tenant's budget."""
        ...

    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation:
        """Hold ``request.amount_usd`` or raise ``BudgetExceededError``; idempotent by id."""
        ...

    async def settle(self, reservation_id: str, usage: Usage) -> Reservation:
        """Charge the real cost; a second settle of the same id changes nothing."""
        ...

    async def release(self, reservation_id: str) -> Reservation:
        """Charge nothing: the call was never sent. A settled reservation stays settled."""
        ...

    async def query_spend(self, query_id: str, *, tenant: str | None = None) -> SpendSummary:
        """Spend of one query across all its reservations: ``tenant``'s query, or (None)
        the query id's spend summed over every tenant that used it."""
        ...

    async def tenant_spend(self, tenant: str, *, at: float | None = None) -> SpendSummary:
        """Spend of a tenant in the period that contains ``at`` (now by default)."""
        ...

    async def reconcile(self, *, now: float | None = None) -> ReconcileReport:
        """Expire reservations whose lease ran out; they stay charged at the reserved amount."""
        ...

    async def audit(
        self,
        *,
        tenant: str | None = None,
        query_id: str | None = None,
        since: float | None = None,
    ) -> list[AuditEntry]:
        """The audit trail, oldest first, optionally filtered."""
        ...

    async def aclose(self) -> None:
        """Release connections and files."""
        ...
