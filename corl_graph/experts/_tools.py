"""Tools and structured output passed through the router to the experts.

A caller that binds tools or asks for a response format (``CORLChatModel.bind_tools``,
``with_structured_output``, the HTTP server's ``tools`` / ``response_format``) sends a
``ChatRequest`` with the query. Every expert call of the run gets it: the caller's chat as
messages (tool calls and tool results included), the tools in OpenAI's function format, the
tool choice, the response format and the sampling options. Each call is still reserved and
settled on the ledger; the tools' schemas and the whole chat count in its worst case.

An expert's reply is voted on by its *ballot* (``ballot_of``):

- a reply with tool calls: the calls normalised, as canonical JSON of ``[name, arguments]``
  pairs sorted by name then arguments (call ids and the order of parallel calls do not count);
- a reply to a JSON response format: the parsed object as canonical JSON (sorted keys);
- any other reply: no ballot here; the router's answer extractor reads its text as before.

The most common ballot wins (ties: the priciest expert behind it, then the earliest), and the
run answers with the text and tool calls of the first call that cast it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage

from corl_graph._exceptions import ConfigError

__all__ = [
    "ChatRequest",
    "ToolCall",
    "ballot_of",
    "normalize_tool_calls",
    "parse_json_reply",
    "tool_choice_name",
]

# A tool call as LangChain writes it: {"name": str, "args": dict, "id": str | None}.
ToolCall = Mapping[str, Any]
ToolChoice = Literal["auto", "none", "required"] | Mapping[str, Any] | None
_CHOICES = ("auto", "none", "required")
_FORMATS = ("text", "json_object", "json_schema")
_BALLOT_TOOLS = "tool_calls:"
_BALLOT_JSON = "json:"


@dataclass(frozen=True)
class ChatRequest:
    """What a chat caller asked for beyond the query text; validated when built.

    ``tools`` are OpenAI function tools (``{"type": "function", "function": {...}}``);
    ``tool_choice`` is "auto", "none", "required" or ``{"type": "function", "function":
    {"name": ...}}``; ``response_format`` is OpenAI's (``{"type": "json_object"}`` or
    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``).

    >>> tool = {"type": "function", "function": {"name": "add", "parameters": {}}}
    >>> ChatRequest(tools=(tool,), tool_choice="required").wants_tool_call
    True
    """

    messages: tuple[BaseMessage, ...] = ()
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: ToolChoice = None
    parallel_tool_calls: bool | None = None
    response_format: Mapping[str, Any] | None = None
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    names: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = []
        for tool in self.tools:
            fn = tool.get("function") if isinstance(tool, Mapping) else None
            if tool.get("type") != "function" or not isinstance(fn, Mapping) or not fn.get("name"):
                raise ConfigError(
                    "each tool must be an OpenAI function tool "
                    '{"type": "function", "function": {"name": ..., "parameters": {...}}}, '
                    f"got {tool!r}"
                )
            names.append(str(fn["name"]))
        object.__setattr__(self, "names", tuple(names))
        choice = self.tool_choice
        if isinstance(choice, str) and choice not in _CHOICES:
            raise ConfigError(
                f"tool_choice must be one of {_CHOICES} or a function, got {choice!r}"
            )
        if choice is not None and not self.tools and choice != "none":
            raise ConfigError(f"tool_choice={choice!r} needs tools")
        named = tool_choice_name(choice)
        if named is not None and named not in names:
            raise ConfigError(f"tool_choice names {named!r}, which is not among the tools {names}")
        if self.response_format is not None:
            kind = self.response_format.get("type")
            if kind not in _FORMATS:
                raise ConfigError(f"response_format.type must be one of {_FORMATS}, got {kind!r}")
            if kind == "json_schema" and not isinstance(
                self.response_format.get("json_schema"), Mapping
            ):
                raise ConfigError(
                    'response_format {"type": "json_schema"} needs a "json_schema" object '
                    'with "name" and "schema"'
                )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise ConfigError(f"temperature must be between 0 and 2, got {self.temperature}")

    @property
    def json_format(self) -> Literal["json_object", "json_schema"] | None:
        """The JSON response format asked for, if any ("text" is none)."""
        kind = self.response_format.get("type") if self.response_format else None
        return kind if kind in ("json_object", "json_schema") else None

    @property
    def wants_tool_call(self) -> bool:
        """True when every answer must be a tool call (required, or a named function)."""
        return bool(self.tools) and (
            self.tool_choice == "required" or tool_choice_name(self.tool_choice) is not None
        )

    @property
    def structured(self) -> bool:
        """True when the reply is data (tools or a JSON format), not free text to extract."""
        return bool(self.tools) or self.json_format is not None

    @property
    def needs_model_support(self) -> bool:
        """True when an expert must understand tools or response formats to serve this."""
        return bool(self.tools) or self.json_format is not None


def tool_choice_name(choice: ToolChoice) -> str | None:
    """The function a tool choice forces, if it names one."""
    if isinstance(choice, Mapping):
        fn = choice.get("function")
        if isinstance(fn, Mapping) and fn.get("name"):
            return str(fn["name"])
        raise ConfigError(
            'a tool_choice object must be {"type": "function", "function": {"name": ...}}, '
            f"got {dict(choice)!r}"
        )
    return None


def normalize_tool_calls(calls: Sequence[ToolCall]) -> str:
    """Canonical JSON of tool calls for voting: names and arguments, ids and order ignored.

    >>> a = [{"name": "add", "args": {"b": 2, "a": 1}, "id": "x"}]
    >>> b = [{"name": "add", "args": {"a": 1, "b": 2}, "id": "y"}]
    >>> normalize_tool_calls(a) == normalize_tool_calls(b)
    True
    """
    pairs = sorted(
        (str(c.get("name", "")), json.dumps(c.get("args") or {}, sort_keys=True)) for c in calls
    )
    return json.dumps([[name, json.loads(args)] for name, args in pairs], sort_keys=True)


def parse_json_reply(text: str) -> Any:
    """The JSON value of a reply to a JSON response format (a fenced block allowed), or
    raise ``ValueError``."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body.removeprefix("json").strip()
    return json.loads(body)


def ballot_of(message: AIMessage, chat: ChatRequest | None) -> str | None:
    """The vote a reply casts in a run with tools or a JSON format (module docstring)."""
    if chat is None:
        return None
    if message.tool_calls:
        return _BALLOT_TOOLS + normalize_tool_calls(message.tool_calls)
    if chat.json_format is not None:
        try:
            value = parse_json_reply(message.text)
        except ValueError:
            return None
        return _BALLOT_JSON + json.dumps(value, sort_keys=True)
    return None
