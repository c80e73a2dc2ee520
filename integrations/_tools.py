"""Tools and structured output for CORLChatModel: normalising what LangChain callers bind,
and the parsers behind ``with_structured_output``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.output_parsers import (
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from corl_graph._exceptions import ConfigError
from corl_graph.experts import ChatRequest, ToolCall

__all__ = [
    "StructuredMethod",
    "has_tool_turns",
    "normalize_tool_choice",
    "output_tool_calls",
    "structured_output",
    "to_openai_tools",
]

StructuredMethod = Literal["function_calling", "json_schema", "json_mode"]
_METHODS = ("function_calling", "json_schema", "json_mode")

ToolLike = Mapping[str, Any] | type | Callable[..., Any] | BaseTool


def to_openai_tools(
    tools: Sequence[ToolLike], *, strict: bool | None = None
) -> tuple[dict[str, Any], ...]:
    """Any LangChain tool (BaseTool, function, pydantic class, TypedDict, OpenAI dict) in
    OpenAI's function-tool format."""
    try:
        return tuple(convert_to_openai_tool(t, strict=strict) for t in tools)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"bind_tools: cannot read a tool schema: {exc}") from exc


def normalize_tool_choice(choice: Any, tools: Sequence[Mapping[str, Any]]) -> Any:
    """LangChain's tool choices in OpenAI's words: "any" and True are "required" (True with
    a single tool forces that tool), a tool's name is that function, None stays None."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if choice == "any":
        return "required"
    if choice is True:
        if len(tools) == 1:
            return {"type": "function", "function": {"name": tools[0]["function"]["name"]}}
        return "required"
    if choice is False:
        return "none"
    if isinstance(choice, str):
        return {"type": "function", "function": {"name": choice}}
    if isinstance(choice, Mapping):
        return dict(choice)
    raise ConfigError(
        "tool_choice must be 'auto', 'none', 'required'/'any', a tool name, True or "
        f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}"
    )


def has_tool_turns(messages: Sequence[BaseMessage]) -> bool:
    """True when the chat holds tool calls or tool results (an agent's later turns)."""
    return any(
        isinstance(m, ToolMessage) or (isinstance(m, AIMessage) and m.tool_calls) for m in messages
    )


def output_tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """The answer's tool calls for an AIMessage, each with an id (agents match results by
    it; a provider that sent none gets one)."""
    return [
        {
            "name": str(c.get("name", "")),
            "args": dict(c.get("args") or {}),
            "id": c.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "type": "tool_call",
        }
        for c in calls
    ]


def structured_output(
    model: Any,
    schema: Mapping[str, Any] | type,
    *,
    method: str,
    include_raw: bool,
    strict: bool | None,
) -> Runnable[Any, Any]:
    """``with_structured_output`` for a chat model that speaks OpenAI's tools and formats."""
    if method not in _METHODS:
        raise ConfigError(
            f"with_structured_output: method must be one of {_METHODS}, got {method!r}"
        )
    if schema is None and method != "json_mode":
        raise ConfigError(f"with_structured_output: method={method!r} needs a schema")
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    tool = convert_to_openai_tool(schema, strict=strict) if schema is not None else None
    ls_format = {"kwargs": {"method": method, "strict": strict}, "schema": tool}
    if method == "function_calling":
        assert tool is not None  # checked above
        name = tool["function"]["name"]
        llm = model.bind_tools(
            [tool],
            tool_choice=name,
            parallel_tool_calls=False,
            ls_structured_output_format=ls_format,
        )
        parser: Runnable[Any, Any] = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
            if is_pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    else:
        if method == "json_schema":
            assert tool is not None
            fn = tool["function"]
            spec: dict[str, Any] = {"name": fn["name"], "schema": fn.get("parameters", {})}
            if fn.get("description"):
                spec["description"] = fn["description"]
            if strict is not None:
                spec["strict"] = strict
            fmt: dict[str, Any] = {"type": "json_schema", "json_schema": spec}
        else:
            fmt = {"type": "json_object"}
        ChatRequest(response_format=fmt)  # validated now, not at the first call
        llm = model.bind(response_format=fmt, ls_structured_output_format=ls_format)
        parser = (
            PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
            if is_pydantic
            else JsonOutputParser()
        )
    if not include_raw:
        chain: Runnable[Any, Any] = llm | parser
        return chain
    parsed = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    with_fallback = parsed.with_fallbacks([failed], exception_key="parsing_error")
    return RunnableMap(raw=llm) | with_fallback
