"""Per-query envelopes: hold a query's whole cap once, hand it out to its calls in memory.

With ``RouterConfig(budget_hold="per_query")`` the first expert call of a run reserves the
tier's ``max_usd_per_query`` from the ledger as one reservation (the *envelope*); every attempt
is then reserved, settled and released against the envelope, in memory, with the same cap
check as a ledger; the run settles the envelope once, when it ends, with the sum of what the
calls cost (``PerQueryHold`` and ``LeasedHold`` in ``_holds.py`` do the ledger side). Two
ledger operations per query instead of two per attempt::

    ledger:   reserve(envelope = tier cap) ─────────────────────────── settle(sum of calls)
    memory:        └ reserve a ─ settle a ─ reserve b ─ settle b ─ …  ┘

What still holds: the envelope is at most the tier's cap and every attempt is checked against
it (query, call and token caps), so no query overspends; the tenant's committed spend includes
the whole envelope while the query runs, so no tenant overspends. A process that dies leaves
the envelope HELD, and it expires charged at the full cap: spend is over-counted, never under.
What it costs: the tenant sees the query's cap, not its calls, as committed while it runs; the
ledger's audit trail has one line per query instead of one per attempt; a run killed mid-way is
charged its whole cap until a late settle. An envelope the ledger refuses (for instance a tenant
with less than a whole cap left) makes the run fall back to one reservation per attempt.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

from corl_graph._exceptions import ConfigError
from corl_graph.budget._caps import check_caps
from corl_graph.budget._ledger import Reservation, ReservationRequest, SpendSummary, Usage
from corl_graph.budget._tiers import BudgetTier, TenantBudget

__all__ = ["ENVELOPE_EXPERT", "QueryEnvelope", "envelope_request"]

# The expert name of an envelope reservation in the ledger and its audit trail.
ENVELOPE_EXPERT = "corl:query-envelope"


def envelope_request(
    tenant: str, run_id: str, tier: BudgetTier, lease_s: float
) -> ReservationRequest:
    """The ledger reservation that holds a whole query: its tier's dollar and token caps."""
    return ReservationRequest(
        tenant=tenant,
        run_id=run_id,
        tier=tier,
        expert=ENVELOPE_EXPERT,
        amount_usd=tier.max_usd_per_query,
        input_tokens=0,
        max_output_tokens=tier.max_tokens_per_query or 0,
        lease_s=lease_s,
    )


@dataclass(slots=True)
class _Held:
    amount: float
    tokens: int
    reservation: Reservation


@dataclass(slots=True)
class QueryEnvelope:
    """The in-memory half of a per-query envelope: ``reserve`` / ``settle`` / ``release`` of
    single attempts, as a ledger would do them, inside ``reservation`` (held in the ledger).

    Its operations never suspend, so a cancellation can never land half way through one.
    """

    cancel_safe: ClassVar[bool] = True

    reservation: Reservation
    settled_usd: float = 0.0
    calls: int = 0
    tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    _held: dict[str, _Held] = field(default_factory=dict)

    def summary(self) -> SpendSummary:
        held = sum(h.amount for h in self._held.values())
        return SpendSummary(self.settled_usd, held, 0.0, self.calls, self.tokens)

    async def reserve(
        self, request: ReservationRequest, *, reservation_id: str | None = None
    ) -> Reservation:
        rid = reservation_id or uuid.uuid4().hex
        if rid in self._held:
            return self._held[rid].reservation
        # The tenant side was checked when the envelope was reserved: it holds the whole cap.
        room = TenantBudget(request.tenant, self.reservation.amount_usd, "total")
        check_caps(request, query=self.summary(), tenant=SpendSummary(), budget=room)
        now = time.time()
        r = self.reservation
        held = Reservation(
            id=rid,
            tenant=r.tenant,
            query_id=r.query_id,
            tier=r.tier,
            expert=request.expert,
            amount_usd=request.amount_usd,
            created_at=now,
            expires_at=now + request.lease_s,
            period=r.period,
        )
        tokens = request.input_tokens + request.max_output_tokens
        self._held[rid] = _Held(request.amount_usd, tokens, held)
        self.calls += 1
        self.tokens += tokens
        return held

    def _pop(self, reservation_id: str) -> _Held:
        try:
            return self._held.pop(reservation_id)
        except KeyError:
            raise ConfigError(f"no held reservation {reservation_id!r} in this envelope") from None

    async def settle(self, reservation_id: str, usage: Usage) -> Reservation:
        held = self._pop(reservation_id)
        self.settled_usd += usage.cost_usd
        self.tokens += usage.input_tokens + usage.output_tokens - held.tokens
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.estimated = self.estimated or usage.estimated
        return held.reservation.with_status("settled")

    async def release(self, reservation_id: str) -> Reservation:
        held = self._pop(reservation_id)
        self.calls -= 1
        self.tokens -= held.tokens
        return held.reservation.with_status("released")

    def usage(self) -> Usage:
        """What to settle the envelope with: settled calls, and any still held at their worst
        case (only a call whose outcome was never recorded can still be held)."""
        held = self._held.values()
        return Usage(
            self.input_tokens + sum(h.tokens for h in held),
            self.output_tokens,
            self.settled_usd + sum(h.amount for h in held),
            estimated=self.estimated or bool(self._held),
        )
