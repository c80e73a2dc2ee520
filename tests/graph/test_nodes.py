"""Each node on its own, with a hand-made state (no graph, no LangGraph runtime)."""

import pytest

from corl_graph import ChatModelExpert, PriceSheet, RouterConfig
from corl_graph.graph import aggregate, answer, call_expert, think
from corl_graph.policies import Cascade, Turn
from corl_graph.protocol import Answer, CallExpert, ExpertCall, StepRecord
from corl_graph.testing import FakeChatModel, ScriptedPolicy


def _config(policy=None) -> RouterConfig:  # type: ignore[no-untyped-def]
    experts = [
        ChatModelExpert("cheap", FakeChatModel("7"), PriceSheet(0.1, 0.1)),
        ChatModelExpert("strong", FakeChatModel("8"), PriceSheet(5.0, 15.0)),
    ]
    return RouterConfig(experts=experts, policy=policy or Cascade(["cheap", "strong"]))


def _call(expert: str, answer: str | None, status: str = "ok") -> ExpertCall:
    return ExpertCall(expert=expert, subquery="q", status=status, text=answer or "", answer=answer)  # type: ignore[arg-type]


async def test_think_asks_the_policy_and_records_the_step() -> None:
    delta = await think({"query": "q", "query_id": "id1"}, None, router=_config())  # type: ignore[arg-type]
    assert delta["pending"] == CallExpert("cheap", "q")
    assert delta["steps"] == [StepRecord(0, "call", "cheap: q", None, None, False)]
    assert delta["run_id"].startswith("id1:")
    assert delta["transcript"] == [Turn("controller", '<call expert="cheap">q</call>')]


async def test_think_falls_back_at_the_step_limit() -> None:
    config = _config(ScriptedPolicy([]))
    state = {
        "query": "q",
        "steps": [StepRecord(i, "think") for i in range(8)],
        "calls": [_call("cheap", "7")],
    }
    delta = await think(state, None, router=config)  # type: ignore[arg-type]
    assert delta["stop_reason"] == "step_limit" and delta["steps"][0].fallback


async def test_call_expert_settles_and_observes() -> None:
    state = {"query": "q", "query_id": "id", "run_id": "r1", "pending": CallExpert("cheap", "sub")}
    delta = await call_expert(state, None, router=_config())  # type: ignore[arg-type]
    (call,) = delta["calls"]
    assert call.status == "ok" and call.answer == "7" and call.subquery == "sub"
    assert delta["transcript"][0].text == '<expert name="cheap">7</expert>'


async def test_aggregate_votes_and_breaks_ties_toward_the_stronger_expert() -> None:
    config = _config()
    delta = await aggregate(
        {"query": "q", "calls": [_call("cheap", "7"), _call("strong", "8")]}, None, router=config
    )  # type: ignore[arg-type]
    assert delta["pending"] == Answer("8") and delta["answer_source"] == "vote"
    delta = await aggregate(
        {"query": "q", "calls": [_call("cheap", "7"), _call("cheap", "7.0"), _call("strong", "8")]},
        None,
        router=config,
    )  # type: ignore[arg-type]
    assert delta["pending"] == Answer("7")


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"pending": Answer("4")}, ("4", "controller", "answered")),
        ({"pending": Answer("4"), "answer_source": "vote"}, ("4", "vote", "aggregated")),
        ({"pending": Answer(""), "budget_exhausted": True}, (None, None, "budget_exhausted")),
        ({"pending": Answer("x"), "stop_reason": "step_limit"}, ("x", "controller", "step_limit")),
    ],
)
async def test_answer_sets_the_stop_reason(state: dict, expected: tuple) -> None:
    delta = await answer({"query": "q", **state}, None, router=_config())  # type: ignore[arg-type]
    assert (delta["answer"], delta["answer_source"], delta["stop_reason"]) == expected
