"""The routing graph: factory, nodes, state, configuration and the Router runner."""

from corl_graph.graph._config import RouterConfig, RouterContext
from corl_graph.graph._factory import create_router_graph
from corl_graph.graph._nodes import aggregate, answer, call_expert, think
from corl_graph.graph._router import Router, RouteResult, TrajectorySink
from corl_graph.graph._state import RouterInput, RouterState

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
    "think",
]
