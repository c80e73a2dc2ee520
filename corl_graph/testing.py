"""Fakes for testing code that uses corl_graph: a scriptable chat model and a scripted policy.

>>> import asyncio
>>> model = FakeChatModel(lambda prompt: "The answer is 42.", input_tokens=10, output_tokens=5)
>>> asyncio.run(model.ainvoke("hi")).usage_metadata["total_tokens"]
15
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

from corl_graph.policies import Decision, PolicyView
from corl_graph.protocol import Action, Aggregate

__all__ = ["FakeChatModel", "ScriptedPolicy"]


class FakeChatModel(BaseChatModel):
    """A chat model whose reply is ``reply(last_message_text)``, with optional usage, delay
    and injected failures (the first ``fail_times`` calls raise ``error``).

    ``usage=False`` sends no ``usage_metadata``, like providers that report none.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reply: Callable[[str], str]
    input_tokens: int = 20
    output_tokens: int = 10
    usage: bool = True
    delay_s: float = 0.0
    fail_times: int = 0
    error: Exception = RuntimeError("injected failure")
    max_tokens: int | None = None
    model_name: str = "fake"
    _calls: int = PrivateAttr(default=0)

    def __init__(self, reply: Callable[[str], str] | str, **kwargs: Any):
        fn = reply if callable(reply) else (lambda _prompt, text=reply: text)
        super().__init__(reply=fn, **kwargs)  # type: ignore[call-arg]

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def _llm_type(self) -> str:
        return "fake-chat"

    def _result(self, messages: list[BaseMessage]) -> ChatResult:
        self._calls += 1
        if self._calls <= self.fail_times:
            raise self.error
        prompt = messages[-1].content if messages else ""
        text = self.reply(prompt if isinstance(prompt, str) else str(prompt))
        usage = (
            {
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "total_tokens": self.input_tokens + self.output_tokens,
            }
            if self.usage
            else None
        )
        message = AIMessage(
            content=text,
            usage_metadata=usage,
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )
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


class ScriptedPolicy:
    """Plays back a fixed list of actions (or Decisions), then answers with what it has.

    >>> from corl_graph.protocol import Answer
    >>> ScriptedPolicy([Answer("4")]).name
    'scripted'
    """

    def __init__(self, script: Iterable[Action | Decision], *, name: str = "scripted"):
        self.script: Sequence[Action | Decision] = list(script)
        self.name = name
        self.views: list[PolicyView] = []

    async def decide(self, view: PolicyView) -> Decision:
        self.views.append(view)
        if view.step < len(self.script):
            item = self.script[view.step]
            return item if isinstance(item, Decision) else Decision(item)
        return Decision(Aggregate())
