"""CORLChatModel in LCEL chains: ainvoke, astream, abatch, callbacks, per-call tier/tenant."""

from __future__ import annotations

from typing import Any

import pytest
from corl_graph.integrations import CORLChatModel
from integration_fakes import make_router
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField

from corl_graph._exceptions import BudgetExceededError, ExpertError, UnknownTierError
from corl_graph.budget import InMemoryLedger, TenantBudget

SENTENCE = "Paris is the capital of France"


def _prompt() -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")])


async def test_lcel_chain_answers_with_the_tier_and_tenant_of_the_config() -> None:
    ledger = InMemoryLedger(default_budget=TenantBudget("*", 10.0, "total"))
    model = CORLChatModel(router=make_router(ledger=ledger))
    chain = _prompt() | model.with_config(configurable={"tier": "high", "tenant": "acme"})
    reply = await chain.ainvoke({"question": "What is 2 + 2?"})
    assert reply.content == "4"
    assert reply.response_metadata["tier"] == "high"
    assert reply.response_metadata["tenant"] == "acme"
    assert reply.response_metadata["cost_usd"] > 0
    assert reply.usage_metadata == {"input_tokens": 20, "output_tokens": 8, "total_tokens": 28}
    spent = await ledger.tenant_spend("acme")
    assert spent.committed_usd == pytest.approx(reply.response_metadata["cost_usd"])


async def test_configurable_field_sets_the_tier_per_call() -> None:
    model = CORLChatModel(router=make_router()).configurable_fields(
        tier=ConfigurableField(id="tier"), tenant=ConfigurableField(id="tenant")
    )
    chain = _prompt() | model | StrOutputParser()
    assert await chain.ainvoke({"question": "2 + 2?"}, {"configurable": {"tier": "high"}}) == "4"
    with pytest.raises(BudgetExceededError):
        await chain.ainvoke({"question": "2 + 2?"}, {"configurable": {"tier": "zero"}})


async def test_astream_streams_the_final_answer_with_usage_on_the_last_chunk() -> None:
    model = CORLChatModel(router=make_router(reply=SENTENCE), tier="low")
    chunks = [c async for c in model.astream("Capital of France?")]
    assert len(chunks) > 3
    assert "".join(str(c.content) for c in chunks) == SENTENCE
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.usage_metadata is not None and total.usage_metadata["total_tokens"] == 28
    assert total.response_metadata["cost_usd"] > 0
    assert chunks[-1].chunk_position == "last"


async def test_abatch_routes_each_input_with_its_own_config() -> None:
    model = CORLChatModel(router=make_router())
    configs: list[Any] = [{"configurable": {"tier": t}} for t in ("low", "high", "low")]
    replies = await model.abatch(["a?", "b?", "c?"], configs)
    assert [r.response_metadata["tier"] for r in replies] == ["low", "high", "low"]
    assert all(r.content == "4" for r in replies)


class _Recorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.outputs: list[LLMResult] = []

    async def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)

    async def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.outputs.append(response)


async def test_callbacks_see_tokens_and_the_cost() -> None:
    recorder = _Recorder()
    model = CORLChatModel(router=make_router(reply=SENTENCE))
    await model.ainvoke("q?", {"callbacks": [recorder]})
    usage = (recorder.outputs[0].llm_output or {})["token_usage"]
    assert usage["total_tokens"] == 28 and usage["cost_usd"] > 0
    streamed = _Recorder()
    _ = [c async for c in model.astream("q?", {"callbacks": [streamed]})]
    assert "".join(streamed.tokens) == SENTENCE


def test_sync_invoke_and_stream_work_without_a_loop() -> None:
    model = CORLChatModel(router=make_router(reply=SENTENCE))
    assert model.invoke("q?", tenant="acme").response_metadata["tenant"] == "acme"
    assert "".join(str(c.content) for c in model.stream("q?")) == SENTENCE


async def test_run_failures_raise_typed_errors() -> None:
    with pytest.raises(UnknownTierError):
        await CORLChatModel(router=make_router(), tier="platinum").ainvoke("q?")
    with pytest.raises(ExpertError, match="upstream is down"):
        await CORLChatModel(router=make_router(fail=True)).ainvoke("q?")
    tight = InMemoryLedger(default_budget=TenantBudget("*", 0.0, "total"))
    with pytest.raises(BudgetExceededError) as info:
        await CORLChatModel(router=make_router(ledger=tight)).ainvoke("q?")
    assert info.value.scope == "tenant"
