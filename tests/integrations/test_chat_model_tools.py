"""CORLChatModel with tools and structured output: passed to the experts, voted, answered."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from corl_graph.integrations import CORLChatModel
from corl_graph.integrations._tools import to_openai_tools
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel
from tool_fakes import arithmetic, call, json_replier, tool_router

from corl_graph._exceptions import (
    BudgetExceededError,
    ConfigError,
    QueryTimeoutError,
    ToolsUnsupportedError,
    UnknownTierError,
)
from corl_graph.experts import ChatRequest, ExpertRequest, OutcomeTable, PriceSheet, ReplayExpert
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import AlwaysExpert
from corl_graph.trajectories import Trajectory


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class Person(BaseModel):
    """A person."""

    name: str
    age: int


async def test_bound_tools_reach_every_expert_and_the_answer_is_a_tool_call() -> None:
    router, models = tool_router(arithmetic, arithmetic)
    model = CORLChatModel(router=router).bind_tools([add, multiply], tool_choice="any")
    reply = await model.ainvoke("What is (2 + 3) * 4?")
    assert isinstance(reply, AIMessage)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert reply.tool_calls[0]["id"] == "call_add"
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    assert reply.response_metadata["expert_calls"] == 2
    for m in models:  # each expert got the tools, the forced choice, and was charged
        _, kwargs = m.seen[0]
        assert [t["function"]["name"] for t in kwargs["tools"]] == ["add", "multiply"]
        assert kwargs["tool_choice"] == "required"
    assert reply.response_metadata["cost_usd"] > 0


async def test_tool_messages_in_the_history_are_routed_on_the_next_turn() -> None:
    router, models = tool_router(arithmetic)
    model = CORLChatModel(router=router).bind_tools([add, multiply])
    history: list[BaseMessage] = [
        HumanMessage("What is (2 + 3) * 4?"),
        call("add", {"a": 2, "b": 3}, "call_add"),
        ToolMessage("5", tool_call_id="call_add"),
    ]
    reply = await model.ainvoke(history)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("multiply", {"a": 5, "b": 4})]
    sent, _ = models[0].seen[0]
    assert [m.type for m in sent] == ["human", "ai", "tool"]  # the chat itself, not a rendering
    history += [reply, ToolMessage("20", tool_call_id=reply.tool_calls[0]["id"])]
    final = await model.ainvoke(history)
    assert final.content == "The answer is 20." and not final.tool_calls


async def test_the_vote_is_over_normalised_tool_calls() -> None:
    def add_reordered(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        return call("add", {"b": 3, "a": 2}, "other-id")  # same call: argument order, id differ

    def multiply_instead(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        return call("multiply", {"a": 2, "b": 3})

    # The priciest expert (e2) disagrees; two cheaper ones agree once normalised.
    router, _ = tool_router(arithmetic, add_reordered, multiply_instead)
    reply = (
        await CORLChatModel(router=router)
        .bind_tools([add, multiply])
        .ainvoke("What is (2 + 3) * 4?")
    )
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert reply.tool_calls[0]["id"] == "call_add"  # the first reply that cast the ballot


async def test_required_tool_choice_does_not_let_a_text_reply_win() -> None:
    def text(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        return AIMessage("I think it is 20.")

    router, _ = tool_router(text, text, arithmetic)
    reply = (
        await CORLChatModel(router=router)
        .bind_tools([add, multiply], tool_choice="add")
        .ainvoke("What is (2 + 3) * 4?")
    )
    assert [c["name"] for c in reply.tool_calls] == ["add"]


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
async def test_structured_output_by_every_method(method: str) -> None:
    obj = {"name": "Ada", "age": 36}
    router, models = tool_router(json_replier(obj), json_replier(obj))
    structured = CORLChatModel(router=router).with_structured_output(Person, method=method)  # type: ignore[arg-type]
    person = await structured.ainvoke("Who wrote the first program? Answer in JSON.")
    assert person == Person(name="Ada", age=36)
    raw = CORLChatModel(router=router).with_structured_output(
        Person.model_json_schema(),
        method=method,
        include_raw=True,  # type: ignore[arg-type]
    )
    out = await raw.ainvoke("Who? JSON please.")
    assert out["parsed"] == obj and out["parsing_error"] is None
    assert isinstance(out["raw"], AIMessage)
    _, kwargs = models[0].seen[0]
    if method == "json_mode":  # a generic model without JSON mode: its text is parsed
        assert "tools" not in kwargs
    else:  # a forced tool: CORL's own, or the expert's with_structured_output for the schema
        assert kwargs["tools"][0]["function"]["name"] == "Person"


async def test_structured_output_votes_on_the_parsed_object() -> None:
    router, _ = tool_router(
        json_replier({"name": "Ada", "age": 36}),
        json_replier({"age": 36, "name": "Ada"}),
        json_replier({"name": "Bob", "age": 1}),  # the priciest expert, outvoted
    )
    structured = CORLChatModel(router=router).with_structured_output(Person, method="json_mode")
    assert await structured.ainvoke("JSON please") == Person(name="Ada", age=36)


async def test_streamed_tool_calls_add_up_to_the_message() -> None:
    router, _ = tool_router(arithmetic)
    model = CORLChatModel(router=router).bind_tools([add, multiply])
    chunks = [c async for c in model.astream("What is (2 + 3) * 4?")]
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert total.usage_metadata is not None and total.usage_metadata["total_tokens"] == 40


async def test_tools_are_budget_gated_like_any_call() -> None:
    router, models = tool_router(arithmetic)
    model = CORLChatModel(router=router, tier="zero").bind_tools([add])
    with pytest.raises(BudgetExceededError):
        await model.ainvoke("What is (2 + 3) * 4?")
    assert models[0].seen == []  # refused before the call


async def test_replayed_experts_without_tool_data_raise_a_clear_error() -> None:
    table = OutcomeTable.from_rows(
        [
            dict(
                query_id="q1",
                split="test",
                model="small",
                correct=1.0,
                answer="4",
                input_tokens=10,
                output_tokens=2,
                cost_usd=1e-6,
            )
        ],
        prices={"small": PriceSheet(0.1, 0.4)},
    )
    replay = ReplayExpert(table, "small")
    router = Router(RouterConfig([replay], AlwaysExpert(["small"])))
    model = CORLChatModel(router=router).bind_tools([add])
    with pytest.raises(ToolsUnsupportedError, match="Replayed experts have no tool data"):
        await model.ainvoke("2 + 2?", query_id="q1")


async def test_per_call_model_selects_the_tier() -> None:
    router, _ = tool_router(arithmetic)
    model = CORLChatModel(router=router, model="corl-low")
    assert (await model.ainvoke("What is (2 + 3) * 4?")).response_metadata["tier"] == "low"
    reply = await model.ainvoke("What is (2 + 3) * 4?", model="corl-high")
    assert reply.response_metadata["tier"] == "high"
    assert reply.response_metadata["model_name"] == "corl-high"
    with pytest.raises(UnknownTierError):
        await model.ainvoke("q", model="corl-platinum")
    with pytest.raises(ConfigError, match="not a router model"):
        CORLChatModel(router=router, model="gpt-4o")


def test_langsmith_params_name_the_provider_and_the_tier_model() -> None:
    router, _ = tool_router(arithmetic)
    params = CORLChatModel(router=router, temperature=0.2, max_tokens=50)._get_ls_params(
        stop=["\n"], model="corl-low"
    )
    assert params == {
        "ls_provider": "corl_graph",
        "ls_model_name": "corl-low",
        "ls_model_type": "chat",
        "ls_temperature": 0.2,
        "ls_max_tokens": 50,
        "ls_stop": ["\n"],
    }


async def test_sampling_options_reach_the_experts_and_stop_cuts_the_answer() -> None:
    router, models = tool_router(arithmetic)
    model = CORLChatModel(router=router, max_tokens=16)
    reply = await model.ainvoke("What is (2 + 3) * 4?", stop=["0"])
    assert reply.content == "2"  # the voted answer "20", cut at the stop sequence
    _, kwargs = models[0].seen[0]
    assert kwargs["stop"] == ["0"]
    # max_tokens lowers the reservation: 16 output tokens priced, not the expert's 64.
    expert = router.config.experts[0]
    plain = ExpertRequest("q", "2 + 2?", "2 + 2?")
    capped = ExpertRequest("q", "2 + 2?", "2 + 2?", ChatRequest(max_tokens=16))
    assert expert.output_token_cap(capped) == 16 and expert.output_token_cap(plain) == 64
    assert expert.worst_case(capped)[1] < expert.worst_case(plain)[1]


async def test_unknown_call_options_are_refused_by_name() -> None:
    router, _ = tool_router(arithmetic)
    with pytest.raises(ConfigError, match="'top_k'"):
        await CORLChatModel(router=router).ainvoke("q", top_k=3)
    with pytest.raises(ConfigError, match="temperature"):
        CORLChatModel(router=router, temperature=5.0)
    with pytest.raises(ConfigError, match="no option 'max_retries'"):
        CORLChatModel(router=router, max_retries=2)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="tool_choice names 'divide'"):
        CORLChatModel(router=router).bind_tools([add], tool_choice="divide")
    with pytest.raises(ConfigError, match="method"):
        CORLChatModel(router=router).with_structured_output(Person, method="xml")  # type: ignore[arg-type]


async def test_timeout_bounds_the_routed_run() -> None:
    def slow(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        return AIMessage("late")

    router, models = tool_router(slow)
    original = models[0]._agenerate

    async def sleepy(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(5)
        return await original(*args, **kwargs)

    object.__setattr__(models[0], "_agenerate", sleepy)
    with pytest.raises(QueryTimeoutError):
        await CORLChatModel(router=router, timeout=0.2).ainvoke("q")


def test_chat_request_refuses_malformed_tools_and_formats() -> None:
    with pytest.raises(ConfigError, match="OpenAI function tool"):
        ChatRequest(tools=({"name": "add"},))
    with pytest.raises(ConfigError, match=r"response_format\.type"):
        ChatRequest(response_format={"type": "xml"})
    with pytest.raises(ConfigError, match="needs tools"):
        ChatRequest(tool_choice="required")


async def test_the_run_record_keeps_the_tool_calls() -> None:
    router, _ = tool_router(arithmetic)
    chat = ChatRequest(
        messages=(HumanMessage("What is (2 + 3) * 4?"),), tools=to_openai_tools([add])
    )
    result = await router.arun("What is (2 + 3) * 4?", chat=chat)
    assert [c["name"] for c in result.tool_calls] == ["add"]
    record = json.loads(json.dumps(result.trajectory.to_dict()))
    assert record["calls"][0]["tool_calls"][0]["args"] == {"a": 2, "b": 3}
    assert Trajectory.from_dict(record).calls[0].tool_calls[0]["name"] == "add"
