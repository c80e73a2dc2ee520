"""The cap check every ledger backend applies inside its own atomic section."""

from __future__ import annotations

from corl_graph._exceptions import BudgetExceededError
from corl_graph.budget._ledger import ReservationRequest, SpendSummary
from corl_graph.budget._tiers import TenantBudget

__all__ = ["check_caps"]

# Float sums of prices drift in the last bits; a reservation that fits to within a
# nano-dollar fits.
_EPS = 1e-12


def check_caps(
    request: ReservationRequest,
    *,
    query: SpendSummary,
    tenant: SpendSummary,
    budget: TenantBudget,
) -> None:
    """Raise ``BudgetExceededError`` if ``request`` would break a query or tenant cap.

    ``query`` and ``tenant`` are the committed spend *before* this request.
    """
    tier = request.tier
    query_left = tier.max_usd_per_query - query.committed_usd
    if request.amount_usd > query_left + _EPS:
        raise BudgetExceededError(
            f"query {request.run_id!r} on tier {tier.name!r}: {request.expert} needs up to "
            f"${request.amount_usd:.6f}, ${max(query_left, 0.0):.6f} of "
            f"${tier.max_usd_per_query:.6f} left",
            scope="query",
            requested_usd=request.amount_usd,
            remaining_usd=max(query_left, 0.0),
        )
    if tier.max_expert_calls is not None and query.calls + 1 > tier.max_expert_calls:
        raise BudgetExceededError(
            f"query {request.run_id!r} on tier {tier.name!r}: "
            f"{tier.max_expert_calls} expert call(s) allowed, all used",
            scope="calls",
            requested_usd=request.amount_usd,
            remaining_usd=max(query_left, 0.0),
        )
    worst_tokens = request.input_tokens + request.max_output_tokens
    if tier.max_tokens_per_query is not None and (
        query.tokens + worst_tokens > tier.max_tokens_per_query
    ):
        raise BudgetExceededError(
            f"query {request.run_id!r} on tier {tier.name!r}: {request.expert} may use "
            f"{worst_tokens} tokens, {tier.max_tokens_per_query - query.tokens} left",
            scope="tokens",
            requested_usd=request.amount_usd,
            remaining_usd=max(query_left, 0.0),
        )
    tenant_left = budget.limit_usd - tenant.committed_usd
    if request.amount_usd > tenant_left + _EPS:
        raise BudgetExceededError(
            f"tenant {request.tenant!r}: {request.expert} needs up to ${request.amount_usd:.6f}, "
            f"${max(tenant_left, 0.0):.6f} of ${budget.limit_usd:.2f} per {budget.period} left",
            scope="tenant",
            requested_usd=request.amount_usd,
            remaining_usd=max(tenant_left, 0.0),
        )
