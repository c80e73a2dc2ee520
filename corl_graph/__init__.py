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

from typing import TYPE_CHECKING

# Exports are loaded on first use (PEP 562), so `import corl_graph.budget` does not pay for
# LangGraph, LangChain and OpenTelemetry; the exceptions are cheap and imported at once.
from corl_graph._exceptions import (
    BudgetExceededError,
    ConfigError,
    CorlError,
    DataFormatError,
    ExpertError,
    ExpertTimeoutError,
    LedgerError,
    PolicyError,
    QueryTimeoutError,
    RunError,
    ToolsUnsupportedError,
    UnknownExpertError,
    UnknownTenantError,
    UnknownTierError,
)

if TYPE_CHECKING:  # what type checkers see; tests/test_public_api.py keeps it equal to _LAZY
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
    from corl_graph.graph import (
        Router,
        RouterConfig,
        RouterContext,
        RouteResult,
        create_router_graph,
    )
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
    from corl_graph.protocol import (
        Aggregate,
        Answer,
        CallExpert,
        Think,
    )
    from corl_graph.trajectories import (
        Segment,
        Trajectory,
    )

_LAZY = {
    "Aggregate": "corl_graph.protocol",
    "AlwaysExpert": "corl_graph.policies",
    "Answer": "corl_graph.protocol",
    "BudgetTier": "corl_graph.budget",
    "CallExpert": "corl_graph.protocol",
    "Cascade": "corl_graph.policies",
    "ChatModelExpert": "corl_graph.experts",
    "ControllerOnly": "corl_graph.policies",
    "Decision": "corl_graph.policies",
    "Expert": "corl_graph.experts",
    "InMemoryLedger": "corl_graph.budget",
    "LLMPolicy": "corl_graph.policies",
    "Ledger": "corl_graph.budget",
    "OutcomeTable": "corl_graph.experts",
    "Policy": "corl_graph.policies",
    "PolicyView": "corl_graph.policies",
    "PostgresLedger": "corl_graph.budget",
    "PriceSheet": "corl_graph.experts",
    "RandomRouter": "corl_graph.policies",
    "ReplayExpert": "corl_graph.experts",
    "RouteResult": "corl_graph.graph",
    "Router": "corl_graph.graph",
    "RouterConfig": "corl_graph.graph",
    "RouterContext": "corl_graph.graph",
    "SQLiteLedger": "corl_graph.budget",
    "Segment": "corl_graph.trajectories",
    "TenantBudget": "corl_graph.budget",
    "Think": "corl_graph.protocol",
    "TierSet": "corl_graph.budget",
    "Trajectory": "corl_graph.trajectories",
    "create_router_graph": "corl_graph.graph",
    "default_tiers": "corl_graph.budget",
    "open_ledger": "corl_graph.budget",
    "replay_experts": "corl_graph.experts",
}

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
    "QueryTimeoutError",
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
    "ToolsUnsupportedError",
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


def __getattr__(name: str) -> object:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'corl_graph' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
