"""create_router_graph: the one factory that wires the nodes into a compiled StateGraph."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from langgraph._internal._runnable import RunnableCallable
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from corl_graph.graph._config import RouterConfig, RouterContext
from corl_graph.graph._nodes import call_expert, finish, think_and_route
from corl_graph.graph._state import RouterInput, RouterState
from corl_graph.graph._sync import sync_twin

__all__ = ["create_router_graph"]


def create_router_graph(
    config: RouterConfig,
    *,
    checkpointer: Any = None,
    name: str = "corl_router",
) -> CompiledStateGraph[RouterState, RouterContext, RouterInput, RouterState]:
    """Build the routing graph::

        START → think ─┬─► call_expert ─► think …
                 ▲     ├─► answer → END      (an Aggregate decision: vote, then answer)
                 └─────┘   (think)

    Invoke it with ``{"query": ...}`` and, per run, ``context=RouterContext(tier, tenant)``
    (defaults come from ``config``). ``Router`` wraps it with tracing and a typed result.
    Sync ``invoke`` / ``stream`` work as well as async: each node has a blocking twin that
    runs it on one background event loop (corl_graph.graph._sync).

    >>> from langchain_core.language_models import FakeListChatModel
    >>> from corl_graph.experts import ChatModelExpert, PriceSheet
    >>> from corl_graph.policies import ControllerOnly
    >>> small = ChatModelExpert("small", FakeListChatModel(responses=["4"]), PriceSheet(0.1, 0.4))
    >>> graph = create_router_graph(RouterConfig(experts=[small], policy=ControllerOnly("small")))
    >>> sorted(n for n in graph.get_graph().nodes if not n.startswith("__"))
    ['answer', 'call_expert', 'think']
    """
    builder = StateGraph(RouterState, context_schema=RouterContext, input_schema=RouterInput)
    # think routes itself with Command(goto=...): a conditional edge would make LangGraph copy
    # every state channel once per step to evaluate it.
    builder.add_node(
        "think",
        _node(think_and_route, config, "think"),
        destinations=("think", "call_expert", "answer"),
    )
    builder.add_node("call_expert", _node(call_expert, config, "call_expert"))
    # The vote and the answer are one superstep (finish): LangGraph's per-step work is the
    # larger part of a routed query's CPU, and a node of its own bought the vote nothing.
    builder.add_node("answer", _node(finish, config, "answer"))
    builder.add_edge(START, "think")
    builder.add_edge("call_expert", "think")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=checkpointer, name=name)


def _node(fn: Callable[..., Awaitable[Any]], config: RouterConfig, name: str) -> RunnableCallable:
    """The node as LangGraph would wrap the async function alone, plus its sync twin."""
    afunc = partial(fn, router=config)
    return RunnableCallable(sync_twin(afunc), afunc, name=name, trace=False)
