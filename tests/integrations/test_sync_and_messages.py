"""The router graph and router_node with sync invoke / stream, and stream_mode="messages"."""

from __future__ import annotations

from typing import Any

from corl_graph.integrations import router_node
from integration_fakes import make_config, make_router
from langchain_core.messages import AIMessageChunk, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from tool_fakes import arithmetic, tool_router

from corl_graph.experts import ChatModelExpert, ChatRequest, PriceSheet
from corl_graph.graph import RouterConfig, RouterContext, create_router_graph
from corl_graph.policies import AlwaysExpert
from corl_graph.testing import FakeChatModel

SENTENCE = "Paris is the capital of France"


def test_compiled_router_runs_with_sync_invoke_and_stream() -> None:
    graph = create_router_graph(make_config(reply=SENTENCE))
    state = graph.invoke({"query": "Capital?"}, context=RouterContext("high", "acme"))
    assert state["answer"] == SENTENCE and state["calls"][0].cost_usd > 0
    nodes = [next(iter(u)) for u in graph.stream({"query": "Capital?"}, stream_mode="updates")]
    assert nodes == ["think", "call_expert", "think", "answer"]


def test_router_node_runs_in_a_sync_parent_graph() -> None:
    parent = StateGraph(MessagesState)
    parent.add_node("route", router_node(make_router(reply=SENTENCE), query_key="messages"))
    parent.add_edge(START, "route")
    parent.add_edge("route", END)
    out = parent.compile().invoke({"messages": [HumanMessage("Capital?")]})
    assert out["messages"][-1].content == SENTENCE


async def test_messages_mode_streams_the_answer_not_the_experts_replies() -> None:
    graph = create_router_graph(make_config(reply=SENTENCE))
    seen: list[tuple[str, Any]] = []
    async for chunk, meta in graph.astream({"query": "Capital?"}, stream_mode="messages"):
        seen.append((meta["langgraph_node"], chunk))
    assert {node for node, _ in seen} == {"answer"}
    tokens = [c.content for _, c in seen if isinstance(c, AIMessageChunk)]
    assert len(tokens) > 3 and "".join(str(t) for t in tokens) == SENTENCE


def test_sync_messages_mode_streams_the_answer_too() -> None:
    graph = create_router_graph(make_config(reply=SENTENCE))
    text = "".join(
        str(c.content)
        for c, meta in graph.stream({"query": "Capital?"}, stream_mode="messages")
        if meta["langgraph_node"] == "answer"
    )
    assert text == SENTENCE


async def test_experts_replies_stream_where_asked_for() -> None:
    expert = ChatModelExpert(
        "small", FakeChatModel(SENTENCE), PriceSheet(0.1, 0.4), stream_replies=True
    )
    graph = create_router_graph(RouterConfig([expert], AlwaysExpert(["small"])))
    nodes = {
        meta["langgraph_node"]
        async for _, meta in graph.astream({"query": "Capital?"}, stream_mode="messages")
    }
    assert nodes == {"call_expert", "answer"}


async def test_messages_mode_streams_the_answers_tool_calls() -> None:
    from langchain_core.utils.function_calling import convert_to_openai_tool

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    router, _ = tool_router(arithmetic)
    chat = ChatRequest(
        messages=(HumanMessage("What is (2 + 3) * 4?"),), tools=(convert_to_openai_tool(add),)
    )
    chunks = [
        c
        async for c, _ in router.graph.astream(
            {"query": "What is (2 + 3) * 4?", "chat": chat}, stream_mode="messages"
        )
    ]
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [("add", {"a": 2, "b": 3})]
