"""Budget tiers, tenants and the ledger that enforces them before money is spent."""

from corl_graph.budget._audit import export_audit
from corl_graph.budget._caps import check_caps
from corl_graph.budget._checks import check_id
from corl_graph.budget._envelope import ENVELOPE_EXPERT
from corl_graph.budget._holds import (
    BudgetHold,
    HoldMode,
    LeasedHold,
    PerAttemptHold,
    PerQueryHold,
    RunHold,
    make_hold,
)
from corl_graph.budget._leases import LEASE_EXPERT, BudgetLeases
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
    provider_usage,
)
from corl_graph.budget._memory import InMemoryLedger
from corl_graph.budget._postgres import PostgresLedger
from corl_graph.budget._sqlite import SQLiteLedger
from corl_graph.budget._tiers import (
    BudgetTier,
    Period,
    TenantBudget,
    TierSet,
    default_tiers,
    period_key,
)
from corl_graph.budget._url import ledger_in_process, open_ledger

__all__ = [
    "ENVELOPE_EXPERT",
    "LEASE_EXPERT",
    "AuditEntry",
    "AuditEvent",
    "BudgetHold",
    "BudgetLeases",
    "BudgetTier",
    "HoldMode",
    "InMemoryLedger",
    "LeasedHold",
    "Ledger",
    "PerAttemptHold",
    "PerQueryHold",
    "Period",
    "PostgresLedger",
    "ReconcileReport",
    "Reservation",
    "ReservationRequest",
    "ReservationStatus",
    "RunHold",
    "SQLiteLedger",
    "SpendSummary",
    "TenantBudget",
    "TierSet",
    "Usage",
    "check_caps",
    "check_id",
    "default_tiers",
    "export_audit",
    "ledger_in_process",
    "make_hold",
    "open_ledger",
    "period_key",
    "provider_usage",
]
