"""An expert backed by any LangChain chat model (ChatOpenAI, ChatAnthropic, a vLLM endpoint…)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from corl_graph._exceptions import ConfigError
from corl_graph.experts._expert import (
    Expert,
    ExpertReply,
    ExpertRequest,
    PriceSheet,
    estimate_tokens,
    input_token_bound,
)

__all__ = ["ChatModelExpert"]


class ChatModelExpert(Expert):
    """A LangChain chat model plus a price sheet.

    The cost comes from the reply's ``usage_metadata``; when the provider sends none it is
    estimated with ``token_counter`` (default: about 3 bytes a token) and marked estimated.

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
        self._model = _bind_max_tokens(model, self.max_output_tokens)

    def _messages(self, request: ExpertRequest) -> list[BaseMessage]:
        messages: list[BaseMessage] = []
        if self.system_prompt:
            messages.append(SystemMessage(self.system_prompt))
        messages.append(HumanMessage(request.subquery))
        return messages

    def worst_case_input_tokens(self, request: ExpertRequest) -> int:
        system = input_token_bound(self.system_prompt) if self.system_prompt else 0
        return system + input_token_bound(request.subquery)

    async def agenerate(self, request: ExpertRequest) -> ExpertReply:
        message = await self._model.ainvoke(self._messages(request))
        text = _text_of(message)
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
        )


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
