"""The routing graph: factory, nodes, state, configuration, the Router runner, and
``sync_twin`` (a blocking twin of an async node, for parent graphs invoked synchronously)."""

from corl_graph.graph._config import RouterConfig, RouterContext
from corl_graph.graph._factory import create_router_graph
from corl_graph.graph._nodes import aggregate, answer, call_expert, think
from corl_graph.graph._router import Router, RouteResult, TrajectorySink
from corl_graph.graph._state import RouterInput, RouterState
from corl_graph.graph._sync import sync_twin

__all__ = [
    "RouteResult",
    "Router",
    "RouterConfig",
    "RouterContext",
    "RouterInput",
    "RouterState",
    "TrajectorySink",
    "aggregate",
    "answer",
    "call_expert",
    "create_router_graph",
    "sync_twin",
    "think",
]
