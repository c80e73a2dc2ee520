"""The router inside a user's LangGraph app: as a compiled subgraph and through router_node,
with SQLite (default) and PostgreSQL checkpointers."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any, TypedDict

import pytest
from corl_graph.integrations import open_checkpointer, router_node, router_serde
from integration_fakes import make_config, make_router
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from corl_graph.graph import RouterContext, create_router_graph
from corl_graph.protocol import ExpertCall

PG_URL = os.environ.get("CORL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class AppState(TypedDict, total=False):
    query: str
    answer: str | None
    draft: str


async def _prepare(state: AppState) -> dict[str, Any]:
    return {"query": state["draft"].strip() + "?"}


def _app_with_compiled_router(checkpointer: Any) -> Any:
    parent = StateGraph(AppState, context_schema=RouterContext)
    parent.add_node("prepare", _prepare)
    parent.add_node("route", create_router_graph(make_config()))
    parent.add_edge(START, "prepare")
    parent.add_edge("prepare", "route")
    parent.add_edge("route", END)
    return parent.compile(checkpointer=checkpointer)


async def test_compiled_router_is_a_subgraph_checkpointed_in_sqlite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'checkpoints.db'}"
    config: Any = {"configurable": {"thread_id": "t1"}}
    with caplog.at_level(logging.WARNING):
        async with open_checkpointer(url) as saver:
            app = _app_with_compiled_router(saver)
            out = await app.ainvoke(
                {"draft": " 2 + 2 "}, config, context=RouterContext("high", "acme")
            )
            assert out["answer"] == "4"
        async with open_checkpointer(url) as saver:  # reopened: the state was persisted
            app = _app_with_compiled_router(saver)
            state = await app.aget_state(config)
            assert state.values["answer"] == "4" and state.next == ()
    # The router's dataclasses load without LangGraph's "unregistered type" warnings.
    assert "unregistered type" not in caplog.text


async def test_router_node_appends_to_messages_state_across_turns(tmp_path: Path) -> None:
    parent = StateGraph(MessagesState)
    parent.add_node("route", router_node(make_router(), query_key="messages"))
    parent.add_edge(START, "route")
    parent.add_edge("route", END)
    config: Any = {"configurable": {"thread_id": "chat", "tier": "high", "tenant": "acme"}}
    async with open_checkpointer(f"sqlite:///{tmp_path / 'c.db'}") as saver:
        app = parent.compile(checkpointer=saver)
        await app.ainvoke({"messages": [HumanMessage("2 + 2?")]}, config)
        out = await app.ainvoke({"messages": [HumanMessage("And 2 + 2 again?")]}, config)
    messages = out["messages"]
    assert [m.type for m in messages] == ["human", "ai", "human", "ai"]
    assert messages[-1].content == "4"
    assert messages[-1].response_metadata["tier"] == "high"
    assert messages[-1].response_metadata["tenant"] == "acme"
    assert messages[-1].usage_metadata["total_tokens"] > 0


async def test_router_node_maps_plain_keys_and_reads_the_tier_from_state() -> None:
    class Plain(TypedDict, total=False):
        question: str
        budget: str
        reply: str | None
        routing: dict[str, Any]

    parent = StateGraph(Plain)
    parent.add_node(
        "route",
        router_node(
            make_router(),
            query_key="question",
            answer_key="reply",
            result_key="routing",
            tier_key="budget",
        ),
    )
    parent.add_edge(START, "route")
    app = parent.compile()
    out = await app.ainvoke({"question": "2 + 2?", "budget": "zero"})
    assert out["reply"] is None
    assert out["routing"]["budget_exhausted"] is True and out["routing"]["tier"] == "zero"


def test_router_serde_round_trips_state_types() -> None:
    serde = router_serde()
    call = ExpertCall("small", "2 + 2?", "ok", text="4", cost_usd=1e-6)
    assert serde.loads_typed(serde.dumps_typed(call)) == call


def _postgres_reason() -> str | None:
    try:
        import psycopg
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver  # noqa: F401
    except ImportError:
        return "langgraph-checkpoint-postgres is not installed"
    try:
        psycopg.connect(PG_URL, connect_timeout=2).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_URL} is unreachable ({str(exc).strip()[:100]})"
    return None


@pytest.mark.integration
async def test_compiled_router_checkpointed_in_postgres() -> None:
    reason = _postgres_reason()
    if reason:
        pytest.skip(reason)
    config: Any = {"configurable": {"thread_id": f"pg-{uuid.uuid4().hex}"}}
    async with open_checkpointer(PG_URL) as saver:
        app = _app_with_compiled_router(saver)
        out = await app.ainvoke({"draft": "2 + 2"}, config, context=RouterContext("low"))
    async with open_checkpointer(PG_URL) as saver:  # as a second replica would see it
        state = await _app_with_compiled_router(saver).aget_state(config)
    assert out["answer"] == state.values["answer"] == "4"
