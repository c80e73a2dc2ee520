"""Offline fakes shared by the integration tests: chat models and routers built from them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from corl_graph.budget import BudgetTier, Ledger, TierSet
from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import AlwaysExpert


class ScriptedChatModel(BaseChatModel):
    """Answers every call with ``reply`` after ``delay_s``; reports usage like a provider."""

    reply: str = "The answer is 4."
    delay_s: float = 0.0
    fail: bool = False
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _result(self, messages: list[BaseMessage]) -> ChatResult:
        self.calls += 1
        if self.fail:
            raise ConnectionError("upstream is down")
        usage = {"input_tokens": 20, "output_tokens": 8, "total_tokens": 28}
        message = AIMessage(self.reply, usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self._result(messages)


def tiers() -> TierSet:
    return TierSet(
        [
            BudgetTier("zero", max_usd_per_query=0.0),
            BudgetTier("low", max_usd_per_query=0.002),
            BudgetTier("high", max_usd_per_query=0.05),
        ]
    )


def make_config(
    *,
    ledger: Ledger | None = None,
    reply: str = "The answer is 4.",
    delay_s: float = 0.0,
    fail: bool = False,
    experts: Sequence[str] = ("small",),
) -> RouterConfig:
    models = [
        ChatModelExpert(
            name,
            ScriptedChatModel(reply=reply, delay_s=delay_s, fail=fail),
            PriceSheet(0.1 * (i + 1), 0.4 * (i + 1)),
            max_output_tokens=64,
            max_retries=0,
        )
        for i, name in enumerate(experts)
    ]
    return RouterConfig(
        experts=models,
        policy=AlwaysExpert(list(experts)),
        tiers=tiers(),
        ledger=ledger,
        default_tier="low",
        fallback_expert=None,
    )


def make_router(**kwargs: Any) -> Router:
    return Router(make_config(**kwargs))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
