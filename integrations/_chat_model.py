"""CORLChatModel: the router as a LangChain chat model, so an LCEL app changes one line."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from corl_graph.integrations._common import (
    chunk_text,
    render_query,
    result_metadata,
    unanswered_error,
)
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict, Field

from corl_graph.graph import Router, RouteResult

__all__ = ["CORLChatModel", "messages_to_query"]

T = TypeVar("T")

# Per-call settings read from RunnableConfig["configurable"] and from invoke keyword arguments.
_ROUTE_KEYS = ("tier", "tenant", "query_id")


def messages_to_query(messages: Sequence[BaseMessage]) -> str:
    """The default query of a chat: one message as it is, several with role labels."""
    return render_query([(m.type, m.text) for m in messages])


class CORLChatModel(BaseChatModel):
    """The budget-aware router behind LangChain's chat model interface.

    Works wherever a chat model does (LCEL chains, ``ainvoke``, ``astream``, ``abatch``,
    callbacks). The tier and tenant come, per call, from ``RunnableConfig``'s
    ``configurable`` (``{"tier": "low", "tenant": "acme", "query_id": ...}``), else from the
    fields below, else from the router's defaults. Each reply carries ``usage_metadata``
    (the experts' tokens) and ``response_metadata["cost_usd"]`` with the calls made. A run
    that could not produce an answer raises ``BudgetExceededError`` (no budget left),
    ``ExpertError`` (every expert failed) or ``PolicyError``, so ``with_fallbacks`` works.

    >>> from langchain_core.language_models import FakeListChatModel
    >>> from corl_graph.experts import ChatModelExpert, PriceSheet
    >>> from corl_graph.graph import Router, RouterConfig
    >>> from corl_graph.policies import ControllerOnly
    >>> small = ChatModelExpert("small", FakeListChatModel(responses=["It is 4."]),
    ...                         PriceSheet(0.1, 0.4))
    >>> model = CORLChatModel(router=Router(RouterConfig([small], ControllerOnly("small"))))
    >>> reply = model.invoke("What is 2 + 2?", config={"configurable": {"tier": "low"}})
    >>> reply.content, reply.response_metadata["tier"]
    ('4', 'low')
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    router: Router = Field(exclude=True)
    tier: str | None = None
    tenant: str | None = None
    query_builder: Callable[[Sequence[BaseMessage]], str] = Field(
        default=messages_to_query, exclude=True
    )

    @property
    def _llm_type(self) -> str:
        return "corl-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"policy": self.router.config.policy.name, "tier": self.tier, "tenant": self.tenant}

    # The public entry points only move per-call settings from the RunnableConfig into the
    # keyword arguments that reach _agenerate / _astream; everything else is LangChain's.
    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
        stop: list[str] | None = None, **kwargs: Any,
    ) -> AIMessage:
        return super().invoke(input, config, stop=stop, **_route_kwargs(config, kwargs))

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
        stop: list[str] | None = None, **kwargs: Any,
    ) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **_route_kwargs(config, kwargs))

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
        stop: list[str] | None = None, **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        yield from super().stream(input, config, stop=stop, **_route_kwargs(config, kwargs))

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
        stop: list[str] | None = None, **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        kwargs = _route_kwargs(config, kwargs)
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield chunk

    async def _agenerate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:
        result = await self._route(messages, kwargs)
        message = AIMessage(
            content=result.answer or "",
            usage_metadata=_usage(result),
            response_metadata=self._metadata(result),
        )
        generation = ChatGeneration(message=message, generation_info={"finish_reason": "stop"})
        return ChatResult(generations=[generation], llm_output=self._llm_output(result))

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:
        return _run_sync(self._agenerate(messages, stop, None, **kwargs))

    async def _astream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # The router decides before it answers, so the final answer is known only at the
        # end of the run; it is then streamed in word-sized chunks, usage on the last one.
        result = await self._route(messages, kwargs)
        for piece in chunk_text(result.answer or ""):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                await run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=_usage(result),
                response_metadata=self._metadata(result),
                chunk_position="last",
            ),
            generation_info={"finish_reason": "stop"},
        )

    def _stream(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        async def collect() -> list[ChatGenerationChunk]:
            return [c async for c in self._astream(messages, stop, None, **kwargs)]

        for chunk in _run_sync(collect()):
            if run_manager is not None and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _route(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> RouteResult:
        result = await self.router.arun(
            self.query_builder(messages),
            tier=kwargs.get("tier") or self.tier,
            tenant=kwargs.get("tenant") or self.tenant,
            query_id=kwargs.get("query_id"),
        )
        error = unanswered_error(result)
        if error is not None:
            raise error
        return result

    def _metadata(self, result: RouteResult) -> dict[str, Any]:
        return {"model_name": f"corl-{result.tier}", "model_provider": "corl_graph",
                "finish_reason": "stop", **result_metadata(result)}

    def _llm_output(self, result: RouteResult) -> dict[str, Any]:
        usage = _usage(result)
        return {
            "model_name": f"corl-{result.tier}",
            "token_usage": {"prompt_tokens": usage["input_tokens"],
                            "completion_tokens": usage["output_tokens"],
                            "total_tokens": usage["total_tokens"],
                            "cost_usd": result.cost_usd},
        }


def _route_kwargs(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Explicit keyword arguments win over ``configurable``, which wins over the fields."""
    configurable = (config or {}).get("configurable") or {}
    merged = {k: configurable[k] for k in _ROUTE_KEYS if configurable.get(k) is not None}
    merged.update(kwargs)
    return merged


def _usage(result: RouteResult) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        total_tokens=result.input_tokens + result.output_tokens,
    )


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` from sync code; inside a running loop (a notebook), on a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
