"""router_node: the router as one node of a user's LangGraph app.

Two ways to put the router in a parent graph::

    # 1. the compiled router graph itself, when the parent's state has "query" / "answer"
    #    keys and its context has tier / tenant attributes (e.g. RouterContext):
    parent.add_node("route", create_router_graph(config))

    # 2. router_node, for any parent state: it maps the parent's keys in and out, and
    #    appends an AIMessage (with usage and cost) when the parent keeps "messages":
    parent.add_node("route", router_node(router, query_key="messages"))

Either way, a checkpointer given to the parent is used by the router's run too (LangGraph
passes it down to graphs invoked inside a node), so the run is resumable with the parent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph._internal._runnable import RunnableCallable

from corl_graph._exceptions import ConfigError
from corl_graph.graph import Router, RouteResult, sync_twin

from ._chat_model import messages_to_query
from ._common import result_metadata, unanswered_error

__all__ = ["router_node"]

RouteFn = Callable[[Mapping[str, Any], RunnableConfig], Awaitable[dict[str, Any]]]


class RouterNode(RunnableCallable):
    """A LangGraph node with an async and a sync path (``invoke`` and ``ainvoke`` of the
    parent graph both work); awaiting ``node(state, config)`` calls the async one."""

    def __init__(self, route: RouteFn):
        super().__init__(sync_twin(route), route, name="corl_router", trace=False)
        self._route = route

    def __call__(
        self, state: Mapping[str, Any], config: RunnableConfig
    ) -> Awaitable[dict[str, Any]]:
        return self._route(state, config)


def router_node(
    router: Router,
    *,
    query_key: str = "query",
    answer_key: str | None = None,
    result_key: str | None = None,
    tier_key: str | None = "tier",
    tenant_key: str | None = "tenant",
    raise_on_unanswered: bool = False,
) -> RouterNode:
    """A node function that routes ``state[query_key]`` and writes the answer back.

    ``state[query_key]`` is a string or a list of LangChain messages. For a string the
    answer goes to ``answer_key`` (default "answer"); for messages an ``AIMessage`` is
    appended to the same key (default ``answer_key`` = ``query_key``), so ``MessagesState``
    apps work as they are. ``result_key`` stores the whole ``RouteResult``'s metadata
    (cost, calls, stop reason). The tier and tenant come from ``state[tier_key]``, else
    from ``config["configurable"]``, else the router's defaults.

    >>> import asyncio
    >>> from langchain_core.language_models import FakeListChatModel
    >>> from corl_graph.experts import ChatModelExpert, PriceSheet
    >>> from corl_graph.graph import RouterConfig
    >>> from corl_graph.policies import ControllerOnly
    >>> small = ChatModelExpert("small", FakeListChatModel(responses=["It is 4."]),
    ...                         PriceSheet(0.1, 0.4))
    >>> node = router_node(Router(RouterConfig([small], ControllerOnly("small"))))
    >>> asyncio.run(node({"query": "2 + 2?", "tier": "low"}, {}))["answer"]
    '4'
    """
    if not isinstance(router, Router):
        raise ConfigError(f"router_node needs a Router, got {type(router).__name__}")

    async def route(state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        if query_key not in state:
            raise ConfigError(f"router_node: the state has no {query_key!r} key to route")
        value = state[query_key]
        query = messages_to_query(value) if _is_messages(value) else str(value)
        configurable = (config or {}).get("configurable") or {}
        result = await router.arun(
            query,
            tier=_setting(state, tier_key, configurable, "tier"),
            tenant=_setting(state, tenant_key, configurable, "tenant"),
            query_id=configurable.get("query_id"),
        )
        error = unanswered_error(result)
        if error is not None and raise_on_unanswered:
            raise error
        return _update(result, value, query_key, answer_key, result_key)

    route.__name__ = "corl_router"
    return RouterNode(route)


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(m, BaseMessage) for m in value)
    )


def _setting(
    state: Mapping[str, Any], key: str | None, configurable: Mapping[str, Any], name: str
) -> str | None:
    if key is not None and state.get(key):
        return str(state[key])
    value = configurable.get(name)
    return str(value) if value else None


def _update(
    result: RouteResult,
    value: Any,
    query_key: str,
    answer_key: str | None,
    result_key: str | None,
) -> dict[str, Any]:
    update: dict[str, Any] = {}
    if _is_messages(value):
        message = AIMessage(
            content=result.answer or "",
            usage_metadata={
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
                "total_tokens": result.input_tokens + result.output_tokens,
            },
            response_metadata={"model_name": f"corl-{result.tier}", **result_metadata(result)},
        )
        # With an add_messages reducer the list is appended to; with none it is replaced.
        update[answer_key or query_key] = [message]
    else:
        update[answer_key or "answer"] = result.answer
    if result_key is not None:
        update[result_key] = result_metadata(result)
    return update
