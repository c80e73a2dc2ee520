"""Agents on CORLChatModel: a two-tool, three-turn task end to end on fake experts."""

from __future__ import annotations

import pytest
from corl_graph.integrations import CORLChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from tool_fakes import arithmetic, tool_router


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def _check_run(messages: list[object], cost_floor: float = 0.0) -> None:
    kinds = [type(m).__name__ for m in messages]
    assert kinds == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    tool_results = [m.content for m in messages if isinstance(m, ToolMessage)]
    assert tool_results == ["5", "20"]
    final = messages[-1]
    assert isinstance(final, AIMessage) and final.content == "The answer is 20."
    spent = sum(m.response_metadata["cost_usd"] for m in messages if isinstance(m, AIMessage))
    assert spent > cost_floor  # every turn went through the budgeted experts


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # create_react_agent moved in 1.0
async def test_create_react_agent_runs_a_multi_step_tool_task() -> None:
    from langgraph.prebuilt import create_react_agent

    router, models = tool_router(arithmetic, arithmetic)
    agent = create_react_agent(CORLChatModel(router=router), [add, multiply])
    state = await agent.ainvoke({"messages": [("user", "What is (2 + 3) * 4?")]})
    _check_run(state["messages"])
    assert all(len(m.seen) == 3 for m in models)  # each expert voted on each of 3 turns


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_create_react_agent_runs_with_sync_invoke() -> None:
    from langgraph.prebuilt import create_react_agent

    router, _ = tool_router(arithmetic)
    agent = create_react_agent(CORLChatModel(router=router), [add, multiply])
    _check_run(agent.invoke({"messages": [("user", "What is (2 + 3) * 4?")]})["messages"])


async def test_langchain_create_agent_runs_a_multi_step_tool_task() -> None:
    agents = pytest.importorskip("langchain.agents")
    router, _ = tool_router(arithmetic, arithmetic)
    agent = agents.create_agent(CORLChatModel(router=router, tier="high"), [add, multiply])
    state = await agent.ainvoke({"messages": [("user", "What is (2 + 3) * 4?")]})
    _check_run(state["messages"])
