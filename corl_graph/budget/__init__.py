"""Budget tiers, tenants and the ledger that enforces them before money is spent."""

from corl_graph.budget._caps import check_caps
from corl_graph.budget._ledger import (
    AuditEntry,
    AuditEvent,
    Ledger,
    ReconcileReport,
    Reservation,
    ReservationRequest,
    ReservationStatus,
    SpendSummary,
    Usage,
)
from corl_graph.budget._memory import InMemoryLedger
from corl_graph.budget._tiers import (
    BudgetTier,
    Period,
    TenantBudget,
    TierSet,
    default_tiers,
    period_key,
)

__all__ = [
    "AuditEntry",
    "AuditEvent",
    "BudgetTier",
    "InMemoryLedger",
    "Ledger",
    "Period",
    "ReconcileReport",
    "Reservation",
    "ReservationRequest",
    "ReservationStatus",
    "SpendSummary",
    "TenantBudget",
    "TierSet",
    "Usage",
    "check_caps",
    "default_tiers",
    "period_key",
]
