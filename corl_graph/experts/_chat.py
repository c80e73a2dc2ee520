"""An expert backed by any LangChain chat model (ChatOpenAI, ChatAnthropic, a vLLM endpoint…)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig

from corl_graph._exceptions import ConfigError, ToolsUnsupportedError
from corl_graph.experts._expert import (
    Expert,
    ExpertReply,
    ExpertRequest,
    PriceSheet,
    estimate_tokens,
    input_token_bound,
)
from corl_graph.experts._tools import ChatRequest, ballot_of, tool_choice_name

# LangGraph's stream_mode="messages" skips model runs tagged so: an expert's raw reply is not
# the router's answer, and streams only where the expert is built with stream_replies=True.
_NOSTREAM = "nostream"

__all__ = ["ChatModelExpert"]


class ChatModelExpert(Expert):
    """A LangChain chat model plus a price sheet.

    The cost comes from the reply's ``usage_metadata``; when the provider sends none it is
    estimated with ``token_counter`` (default: about 3 bytes a token) and marked estimated.

    A request with a ``ChatRequest`` (tools, a JSON response format, the caller's chat) is
    sent as the caller's messages, with the tools bound through the model's ``bind_tools`` and
    a JSON format through its ``with_structured_output`` (or, for OpenAI-compatible models,
    as ``response_format`` itself); ``stop``, ``temperature`` and ``max_tokens`` go with it.
    ``stream_replies=False`` (default) tags the model's runs ``nostream`` so that LangGraph's
    ``stream_mode="messages"`` shows the router's answer, not every expert's reply.

    >>> from langchain_core.language_models import FakeListChatModel
    >>> e = ChatModelExpert("small", FakeListChatModel(responses=["4"]), PriceSheet(0.1, 0.4))
    >>> e.descriptor.output_usd_per_mtok
    0.4
    """

    def __init__(
        self,
        name: str,
        model: BaseChatModel,
        price: PriceSheet,
        *,
        system_prompt: str | None = None,
        token_counter: Callable[[str], int] = estimate_tokens,
        provider: str | None = None,
        stream_replies: bool = False,
        **limits: Any,
    ):
        if not isinstance(model, BaseChatModel):
            raise ConfigError(
                f"expert {name!r}: model must be a LangChain BaseChatModel, got "
                f"{type(model).__name__}"
            )
        super().__init__(name, price, **limits)
        self.system_prompt = system_prompt
        self.token_counter = token_counter
        self.provider = provider or _provider_of(model)
        self.model_name = str(
            getattr(model, "model_name", None) or getattr(model, "model", None) or name
        )
        self.stream_replies = stream_replies
        self._base = model
        self._model = _bind_max_tokens(model, self.max_output_tokens)

    supports_tools = True

    def _messages(self, request: ExpertRequest) -> list[BaseMessage]:
        messages: list[BaseMessage] = []
        if self.system_prompt:
            messages.append(SystemMessage(self.system_prompt))
        chat = request.chat
        if chat is not None and chat.messages:
            # The caller's chat as it is (tool calls and tool results included); a sub-query
            # the controller rewrote follows it as the turn to answer.
            messages.extend(chat.messages)
            if request.subquery.strip() != request.query.strip():
                messages.append(HumanMessage(request.subquery))
            return messages
        messages.append(HumanMessage(request.subquery))
        return messages

    def worst_case_input_tokens(self, request: ExpertRequest) -> int:
        system = input_token_bound(self.system_prompt) if self.system_prompt else 0
        chat = request.chat
        if chat is None or not chat.messages:
            tokens = system + input_token_bound(request.subquery)
        else:
            tokens = sum(input_token_bound(_wire_text(m)) for m in self._messages(request))
        if chat is not None:
            # Tool schemas and a response format are sent as text too.
            extra = [*chat.tools, *([chat.response_format] if chat.response_format else [])]
            tokens += sum(input_token_bound(json.dumps(x, default=str)) for x in extra)
        return tokens

    def _runnable(self, request: ExpertRequest) -> Runnable[Any, Any]:
        chat = request.chat
        model: BaseChatModel = self._model
        cap = self.output_token_cap(request)
        if cap != self.max_output_tokens:
            model = _bind_max_tokens(self._base, cap)
        if chat is not None and chat.temperature is not None:
            if "temperature" not in type(model).model_fields:
                raise ToolsUnsupportedError(
                    f"expert {self.name!r}: its model ({type(model).__name__}) has no "
                    "temperature setting; call without temperature"
                )
            model = model.model_copy(update={"temperature": chat.temperature})
        runnable: Runnable[Any, Any] = model
        if chat is None:
            return runnable
        kwargs: dict[str, Any] = {}
        if chat.stop:
            kwargs["stop"] = list(chat.stop)
        if chat.tools and chat.tool_choice != "none":
            runnable = _bind_tools(self.name, model, chat, kwargs)
        elif chat.json_format is not None:
            runnable = _structured(self.name, model, chat, kwargs)
        elif kwargs:
            runnable = model.bind(**kwargs)
        return runnable

    async def agenerate(self, request: ExpertRequest) -> ExpertReply:
        config: RunnableConfig = {} if self.stream_replies else {"tags": [_NOSTREAM]}
        out = await self._runnable(request).ainvoke(self._messages(request), config=config)
        message, parsed = _unpack(out)
        text = _text_of(message)
        if parsed is not None and not text.strip():
            # A provider that answered a JSON format through a function call: its object is
            # the reply.
            text = json.dumps(parsed)
            message = AIMessage(
                text,
                usage_metadata=getattr(message, "usage_metadata", None),
                response_metadata=getattr(message, "response_metadata", {}),
            )
        usage = getattr(message, "usage_metadata", None)
        meta = getattr(message, "response_metadata", {}) or {}
        if usage and (usage.get("input_tokens") or usage.get("output_tokens")):
            in_tok, out_tok, estimated = usage["input_tokens"], usage["output_tokens"], False
        else:
            prompt = "\n".join(_text_of(m) for m in self._messages(request))
            in_tok, out_tok, estimated = self.token_counter(prompt), self.token_counter(text), True
        return ExpertReply(
            text=text,
            input_tokens=int(in_tok),
            output_tokens=int(out_tok),
            estimated=estimated,
            finish_reason=meta.get("finish_reason") or meta.get("stop_reason"),
            response_model=meta.get("model_name") or meta.get("model"),
            answer=ballot_of(message, request.chat) if isinstance(message, AIMessage) else None,
            tool_calls=tuple(
                {"name": c["name"], "args": c["args"], "id": c.get("id")}
                for c in getattr(message, "tool_calls", None) or ()
            ),
        )


def _bind_tools(
    name: str, model: BaseChatModel, chat: ChatRequest, kwargs: dict[str, Any]
) -> Runnable[Any, Any]:
    choice: Any = chat.tool_choice
    forced = tool_choice_name(choice)
    if forced is not None:
        choice = forced  # bind_tools takes the name: every provider maps it
    elif choice == "required":
        choice = "any" if "anthropic" in type(model).__module__ else "required"
    if choice is not None:
        kwargs["tool_choice"] = choice
    if chat.parallel_tool_calls is not None:
        kwargs["parallel_tool_calls"] = chat.parallel_tool_calls
    try:
        return model.bind_tools([dict(t) for t in chat.tools], **kwargs)
    except NotImplementedError as exc:
        raise ToolsUnsupportedError(
            f"expert {name!r}: its model ({type(model).__name__}) has no bind_tools, so it "
            "cannot take tools; use a tool-calling chat model for this expert"
        ) from exc


def _structured(
    name: str, model: BaseChatModel, chat: ChatRequest, kwargs: dict[str, Any]
) -> Runnable[Any, Any]:
    fmt = chat.response_format or {}
    if _openai_compatible(model):
        # The format goes to the provider as it is; the reply's text is the JSON.
        return model.bind(response_format=dict(fmt), **kwargs)
    bound: BaseChatModel | Runnable[Any, Any] = model.bind(**kwargs) if kwargs else model
    schema: dict[str, Any] | None = None
    method = "json_mode"
    if chat.json_format == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = {"title": spec.get("name", "response"), **(spec.get("schema") or {})}
        if spec.get("description"):
            schema = {"description": spec["description"], **schema}
        method = "json_schema"
    takes_method = "method" in inspect.signature(type(model).with_structured_output).parameters
    try:
        if takes_method:
            return model.with_structured_output(schema, method=method, include_raw=True)  # type: ignore[arg-type]
        if schema is None:  # JSON mode without provider support: the reply's text is parsed
            return bound
        return model.with_structured_output(schema, include_raw=True)
    except NotImplementedError as exc:
        raise ToolsUnsupportedError(
            f"expert {name!r}: its model ({type(model).__name__}) supports neither "
            "with_structured_output nor tool calling, so it cannot answer in a JSON format"
        ) from exc


def _openai_compatible(model: BaseChatModel) -> bool:
    return any(c.__module__.startswith("langchain_openai.") for c in type(model).__mro__)


def _unpack(out: Any) -> tuple[BaseMessage, Any]:
    """The reply message and, from ``with_structured_output(include_raw=True)``, its object."""
    if isinstance(out, dict) and "raw" in out:
        return out["raw"], out.get("parsed")
    return out, None


def _wire_text(message: BaseMessage) -> str:
    """What a message costs on the wire: its text, plus the JSON of its tool calls."""
    calls = getattr(message, "tool_calls", None) or []
    return _text_of(message) + (json.dumps(calls, default=str) if calls else "")


def _text_of(message: BaseMessage | AIMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = [p if isinstance(p, str) else str(p.get("text", "")) for p in content]
    return "".join(parts)


def _bind_max_tokens(model: BaseChatModel, max_tokens: int) -> Any:
    """Enforce max_tokens on the provider side, where the model supports it."""
    for field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if field in type(model).model_fields:
            return model.model_copy(update={field: max_tokens})
    return model


def _provider_of(model: BaseChatModel) -> str:
    llm_type = getattr(model, "_llm_type", "") or ""
    for known in ("openai", "anthropic", "vllm", "bedrock", "vertex", "mistral", "groq"):
        if known in llm_type.lower() or known in type(model).__module__:
            return known
    return llm_type or "unknown"
