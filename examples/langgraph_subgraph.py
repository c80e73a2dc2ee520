"""The router as one node of a LangGraph chat app, checkpointed in SQLite.

The app keeps a ``MessagesState``; ``router_node`` routes the conversation and appends the
answer as an ``AIMessage`` carrying tokens and dollars. The checkpointer the app is
compiled with records the router's run too, so a thread can be resumed (and a PostgreSQL
URL makes it shared by several replicas: ``open_checkpointer("postgresql://…")``).

    python examples/langgraph_subgraph.py [CHECKPOINT_DB]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from corl_graph.integrations import open_checkpointer, router_node
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import AlwaysExpert


def build_app_graph() -> StateGraph[Any]:
    expert = ChatModelExpert(
        "small", FakeListChatModel(responses=["It is 4."]), PriceSheet(0.15, 0.6)
    )
    router = Router(RouterConfig(experts=[expert], policy=AlwaysExpert(["small"])))
    graph = StateGraph(MessagesState)
    graph.add_node("route", router_node(router, query_key="messages"))
    graph.add_edge(START, "route")
    graph.add_edge("route", END)
    return graph


async def main(argv: list[str] | None = None) -> int:
    args = argv or []
    db = Path(args[0]) if args else Path(tempfile.mkdtemp()) / "checkpoints.db"
    config: Any = {"configurable": {"thread_id": "user-42", "tier": "low", "tenant": "acme"}}
    async with open_checkpointer(f"sqlite:///{db}") as saver:
        app = build_app_graph().compile(checkpointer=saver)
        for question in ("What is 2 + 2?", "Are you sure?"):
            out = await app.ainvoke({"messages": [HumanMessage(question)]}, config)
            reply = out["messages"][-1]
            print(f"{question} -> {reply.content} (${reply.response_metadata['cost_usd']:.8f})")
    async with open_checkpointer(f"sqlite:///{db}") as saver:  # a restart resumes the thread
        state = await build_app_graph().compile(checkpointer=saver).aget_state(config)
        print("messages in the thread after a restart:", len(state.values["messages"]))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
