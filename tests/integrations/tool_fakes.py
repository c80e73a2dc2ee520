"""Offline tool-calling experts: chat models that call tools the way a provider does."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from corl_graph.budget import BudgetTier, TierSet
from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import AlwaysExpert

# (messages, the call's keyword arguments: tools, tool_choice, response_format...) -> reply
Script = Callable[[list[BaseMessage], dict[str, Any]], AIMessage]


class ToolScriptModel(BaseChatModel):
    """A tool-calling chat model whose reply is ``script(messages, kwargs)``; records every
    call's messages and keyword arguments, reports usage like a provider."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: Script
    seen: list[tuple[list[BaseMessage], dict[str, Any]]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "tool-script"

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _result(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatResult:
        self.seen.append((list(messages), dict(kwargs)))
        reply = self.script(messages, kwargs)
        reply.usage_metadata = {"input_tokens": 30, "output_tokens": 10, "total_tokens": 40}
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages, {**kwargs, "stop": stop})

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(messages, {**kwargs, "stop": stop})


def call(name: str, args: dict[str, Any], id_: str | None = None) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": id_, "type": "tool_call"}])


def arithmetic(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """Solves "(a + b) * c" with the add and multiply tools, one step per turn."""
    question = next(m.text for m in messages if m.type == "human")
    a, b, c = (int(x) for x in re.findall(r"\d+", question)[:3])
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if not kwargs.get("tools"):
        return AIMessage(f"The answer is {(a + b) * c}.")
    if not results:
        return call("add", {"a": a, "b": b}, "call_add")
    if len(results) == 1:
        return call("multiply", {"a": int(str(results[0].content)), "b": c}, "call_mul")
    return AIMessage(f"The answer is {results[-1].content}.")


def json_replier(obj: dict[str, Any]) -> Script:
    """Answers a JSON format with ``obj`` as text, or through the schema's tool when the
    caller (a generic with_structured_output) binds one."""

    def script(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        tools = kwargs.get("tools")
        if tools:
            return call(tools[0]["function"]["name"], obj, "call_json")
        return AIMessage(json.dumps(obj))

    return script


def tiers() -> TierSet:
    return TierSet(
        [
            BudgetTier("zero", max_usd_per_query=0.0),
            BudgetTier("low", max_usd_per_query=0.002),
            BudgetTier("high", max_usd_per_query=0.05),
        ]
    )


def tool_router(*scripts: Script, **config: Any) -> tuple[Router, list[ToolScriptModel]]:
    """A router over one expert per script ("e0", "e1", ...), every one called, then a vote."""
    models = [ToolScriptModel(script=s) for s in scripts]
    experts = [
        ChatModelExpert(
            f"e{i}",
            m,
            PriceSheet(0.1 * (i + 1), 0.4 * (i + 1)),
            max_output_tokens=64,
            max_retries=0,
        )
        for i, m in enumerate(models)
    ]
    names = [e.name for e in experts]
    config.setdefault("default_tier", "high")
    router = Router(
        RouterConfig(
            experts=experts,
            policy=AlwaysExpert(names),
            tiers=tiers(),
            fallback_expert=None,
            **config,
        )
    )
    return router, models


def _value(schema: dict[str, Any], name: str, text: str) -> Any:
    """A plausible value for one JSON-schema property, taken from the prompt where it can."""
    kind = schema.get("type")
    if "anyOf" in schema:
        kinds = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return _value(kinds[0] if kinds else {}, name, text)
    if kind == "integer":
        numbers = re.findall(r"\d+", text)
        return int(numbers[0]) if numbers else 3
    if kind == "number":
        numbers = re.findall(r"\d+(?:\.\d+)?", text)
        return float(numbers[0]) if numbers else 3.0
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    quoted = re.findall(r"'([^']+)'", text)
    if quoted and name.endswith("name"):
        return quoted[0]
    return f"a {name} about {text.split()[-1].strip('.?!') if text.split() else 'it'}"


def _object(schema: dict[str, Any], text: str) -> dict[str, Any]:
    props = schema.get("properties", {})
    return {k: _value(v, k, text) for k, v in props.items()}


def generic(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """Behaves like a compliant provider for LangChain's standard suites: calls the forced
    tool, or the tool named in the prompt, with arguments read from the schema and the
    prompt; answers a JSON format with an object of the schema's (or the prompt's) keys;
    after a tool result, answers with it; otherwise says hello."""
    text = next((m.text for m in reversed(messages) if m.type == "human"), "")
    tools = kwargs.get("tools") or []
    choice = kwargs.get("tool_choice")
    last = messages[-1] if messages else None
    if tools and not isinstance(last, ToolMessage):
        names = [t["function"]["name"] for t in tools]
        chosen = next((n for n in names if n == choice), None)
        chosen = chosen or next((n for n in names if n in text), None)
        if chosen is None and choice in ("any", "required", True):
            chosen = names[0]
        if chosen is None and len(tools) == 1 and "weather" in text.lower():
            chosen = names[0]
        if chosen is not None:
            fn = next(t["function"] for t in tools if t["function"]["name"] == chosen)
            args = _object(fn.get("parameters", {}), text)
            return call(chosen, args, f"call_{chosen}")
    if isinstance(last, ToolMessage):
        return AIMessage(f"The tool said: {last.text}")
    fmt = kwargs.get("response_format")
    if fmt is not None or "json" in text.lower():  # JSON mode: the prompt asks for JSON
        if fmt is not None and fmt.get("type") == "json_schema":
            return AIMessage(json.dumps(_object(fmt["json_schema"]["schema"], text)))
        keys = re.findall(r"'(\w+)'", text) or ["answer"]
        return AIMessage(json.dumps({k: f"a {k}" for k in keys}))
    return AIMessage("Hello! How can I help you today?")
