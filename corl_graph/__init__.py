"""corl_graph: budget-aware expert routing for LangChain / LangGraph applications.

A controller policy decides, per query and budget tier, whether to think, call one of several
expert LLMs with a sub-query, aggregate their answers, or answer; a ledger guarantees that no
query and no tenant overspends; every expert call is an OpenTelemetry span with tokens and
dollars; and ``corl_graph.training`` fine-tunes the controller on the recorded runs.

>>> from corl_graph import ChatModelExpert, Cascade, PriceSheet, Router, RouterConfig
>>> from corl_graph.testing import FakeChatModel
>>> small = ChatModelExpert("small", FakeChatModel("It is 4."), PriceSheet(0.1, 0.4))
>>> big = ChatModelExpert("big", FakeChatModel("4"), PriceSheet(2.5, 10.0))
>>> router = Router(RouterConfig(experts=[small, big], policy=Cascade(["small", "big"])))
>>> router.run("What is 2 + 2?", tier="low").answer
'4'
"""

from corl_graph._exceptions import (
    BudgetExceededError,
    ConfigError,
    CorlError,
    DataFormatError,
    ExpertError,
    ExpertTimeoutError,
    LedgerError,
    PolicyError,
    RunError,
    UnknownExpertError,
    UnknownTenantError,
    UnknownTierError,
)
from corl_graph.budget import (
    BudgetTier,
    InMemoryLedger,
    Ledger,
    PostgresLedger,
    SQLiteLedger,
    TenantBudget,
    TierSet,
    default_tiers,
    open_ledger,
)
from corl_graph.experts import (
    ChatModelExpert,
    Expert,
    OutcomeTable,
    PriceSheet,
    ReplayExpert,
    replay_experts,
)
from corl_graph.graph import Router, RouterConfig, RouterContext, RouteResult, create_router_graph
from corl_graph.policies import (
    AlwaysExpert,
    Cascade,
    ControllerOnly,
    Decision,
    LLMPolicy,
    Policy,
    PolicyView,
    RandomRouter,
)
from corl_graph.protocol import Aggregate, Answer, CallExpert, Think
from corl_graph.trajectories import Segment, Trajectory

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "AlwaysExpert",
    "Answer",
    "BudgetExceededError",
    "BudgetTier",
    "CallExpert",
    "Cascade",
    "ChatModelExpert",
    "ConfigError",
    "ControllerOnly",
    "CorlError",
    "DataFormatError",
    "Decision",
    "Expert",
    "ExpertError",
    "ExpertTimeoutError",
    "InMemoryLedger",
    "LLMPolicy",
    "Ledger",
    "LedgerError",
    "OutcomeTable",
    "Policy",
    "PolicyError",
    "PolicyView",
    "PostgresLedger",
    "PriceSheet",
    "RandomRouter",
    "ReplayExpert",
    "RouteResult",
    "Router",
    "RouterConfig",
    "RouterContext",
    "RunError",
    "SQLiteLedger",
    "Segment",
    "TenantBudget",
    "Think",
    "TierSet",
    "Trajectory",
    "UnknownExpertError",
    "UnknownTenantError",
    "UnknownTierError",
    "__version__",
    "create_router_graph",
    "default_tiers",
    "open_ledger",
    "replay_experts",
]
