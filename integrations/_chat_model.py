"""CORLChatModel: the router as a LangChain chat model, so an LCEL app changes one line."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolCallChunk,
    UsageMetadata,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from pydantic import ConfigDict, Field, ValidationError

from corl_graph._exceptions import ConfigError, QueryTimeoutError
from corl_graph.experts import ChatRequest
from corl_graph.graph import Router, RouteResult

from ._common import (
    chunk_text,
    render_query,
    result_metadata,
    unanswered_error,
)
from ._tools import (
    StructuredMethod,
    ToolLike,
    has_tool_turns,
    normalize_tool_choice,
    output_tool_calls,
    structured_output,
    to_openai_tools,
)

__all__ = ["CORLChatModel", "messages_to_query"]

T = TypeVar("T")

# Per-call settings read from RunnableConfig["configurable"] and from invoke keyword arguments.
_ROUTE_KEYS = ("tier", "tenant", "query_id", "model")
# Everything else a call may carry; any other keyword is refused by name (never dropped).
_CALL_KEYS = frozenset(
    {
        *_ROUTE_KEYS,
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "max_tokens",
        "temperature",
        "timeout",
    }
)
_MODEL_PREFIX = "corl-"


def messages_to_query(messages: Sequence[BaseMessage]) -> str:
    """The default query of a chat: one message as it is, several with role labels (an
    assistant's tool calls written out, so the controller sees them)."""
    return str(render_query([(str(m.type), _turn_text(m)) for m in messages]))


def _turn_text(message: BaseMessage) -> str:
    calls = getattr(message, "tool_calls", None) or []
    text = str(message.text)
    for c in calls:
        text += f"\n[tool call {c['name']}({json.dumps(c['args'], sort_keys=True)})]"
    return text.strip()


def tier_of_model(model: str | None) -> str | None:
    """The tier a model name asks for: "corl-low" is tier "low"; "corl" the default."""
    if model is None or model in ("corl", "corl-router"):
        return None
    if not model.startswith(_MODEL_PREFIX) or len(model) == len(_MODEL_PREFIX):
        raise ConfigError(
            f"model {model!r} is not a router model: use 'corl-<tier>' (e.g. 'corl-low') "
            "or 'corl' for the default tier"
        )
    return model[len(_MODEL_PREFIX) :]


class CORLChatModel(BaseChatModel):
    """The budget-aware router behind LangChain's chat model interface.

    Works wherever a chat model does (LCEL chains, ``ainvoke``, ``astream``, ``abatch``,
    callbacks). The tier and tenant come, per call, from ``RunnableConfig``'s
    ``configurable`` (``{"tier": "low", "tenant": "acme", "query_id": ...}``), else from the
    fields below, else from the router's defaults. Each reply carries ``usage_metadata``
    (the experts' tokens) and ``response_metadata["cost_usd"]`` with the calls made. A run
    that could not produce an answer raises ``BudgetExceededError`` (no budget left),
    ``ExpertError`` (every expert failed) or ``PolicyError``, so ``with_fallbacks`` works.

    ``model="corl-low"`` (field or per call) picks the tier by name. ``bind_tools`` and
    ``with_structured_output`` pass tools and response formats to the experts (see
    docs/integrations.md for the voting rule); the answer may then carry ``tool_calls``.
    ``temperature``, ``max_tokens`` and ``stop`` go to every expert call (``max_tokens`` also
    lowers its reservation; ``stop`` also cuts the answer), ``timeout`` bounds the whole
    routed run (``QueryTimeoutError``). Any other call keyword raises ``ConfigError``.

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

    # Unknown constructor options are refused (ConfigError), never silently dropped.
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    router: Router = Field(exclude=True)
    tier: str | None = None
    tenant: str | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    # LangChain's convention: with streaming=True, invoke streams tokens to the callbacks.
    streaming: bool = False
    query_builder: Callable[[Sequence[BaseMessage]], str] = Field(
        default=messages_to_query, exclude=True
    )

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            # A ConfigError of model_post_init comes out wrapped: raise it as it is.
            for error in exc.errors():
                cause = (error.get("ctx") or {}).get("error")
                if isinstance(cause, ConfigError):
                    raise cause from None
            unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
            if unknown:
                raise ConfigError(
                    f"CORLChatModel has no option {', '.join(map(repr, unknown))}: it takes "
                    "router, tier, tenant, model, temperature, max_tokens, stop, timeout, "
                    "streaming, query_builder and LangChain's own (callbacks, tags, "
                    "metadata, cache, rate_limiter, disable_streaming...); retries are set "
                    "on each expert (ChatModelExpert(max_retries=...))"
                ) from None
            raise

    def model_post_init(self, context: Any, /) -> None:
        tier_of_model(self.model)
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"timeout must be a number of seconds > 0, got {self.timeout!r}")
        ChatRequest(max_tokens=self.max_tokens, temperature=self.temperature)

    @property
    def _llm_type(self) -> str:
        return "corl-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "policy": self.router.config.policy.name,
            "tier": self.tier,
            "tenant": self.tenant,
            "model": self.model,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="corl_graph",
            # A per-call model is reported as it was asked for (the suites' convention).
            ls_model_name=str(kwargs.get("model") or f"corl-{self._tier(kwargs)}"),
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop := stop or kwargs.get("stop") or self.stop:
            params["ls_stop"] = stop
        return params

    def _tier(self, kwargs: Mapping[str, Any]) -> str:
        """The tier of a call: ``tier``, else ``model``'s, per call, then on the model."""
        tier = kwargs.get("tier") or tier_of_model(kwargs.get("model"))
        tier = tier or self.tier or tier_of_model(self.model)
        return str(tier or self.router.config.default_tier)

    def bind_tools(
        self,
        tools: Sequence[ToolLike],
        *,
        tool_choice: Any = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the experts; the router's answer may be one or more calls.

        ``tool_choice``: "auto", "none", "required" (or "any" / True), or a tool's name.
        """
        formatted = to_openai_tools(tools, strict=strict)
        choice = normalize_tool_choice(tool_choice, formatted)
        ChatRequest(tools=formatted, tool_choice=choice)  # refuse a bad choice now
        if choice is not None:
            kwargs["tool_choice"] = choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(tools=list(formatted), **kwargs)

    def with_structured_output(
        self,
        schema: Mapping[str, Any] | type,
        *,
        include_raw: bool = False,
        method: StructuredMethod = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Answers parsed into ``schema`` (pydantic class, TypedDict, JSON schema), asked of
        the experts as a forced tool call ("function_calling"), a JSON-schema response format
        ("json_schema") or JSON mode ("json_mode": the prompt must ask for JSON)."""
        if kwargs:
            raise ConfigError(f"with_structured_output: unknown arguments {sorted(kwargs)}")
        return structured_output(
            self, schema, method=method, include_raw=include_raw, strict=strict
        )

    # The public entry points only move per-call settings from the RunnableConfig into the
    # keyword arguments that reach _agenerate / _astream; everything else is LangChain's.
    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return super().invoke(input, config, stop=stop, **_route_kwargs(config, kwargs))

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **_route_kwargs(config, kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        yield from super().stream(input, config, stop=stop, **_route_kwargs(config, kwargs))

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        kwargs = _route_kwargs(config, kwargs)
        async for chunk in super().astream(input, config, stop=stop, **kwargs):
            yield chunk

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result, stop = await self._route(messages, stop, kwargs)
        tool_calls = output_tool_calls(result.tool_calls)
        finish = _finish_reason(result, tool_calls)
        message = AIMessage(
            content=_cut(result.answer or "", stop),
            tool_calls=tool_calls,
            usage_metadata=_usage(result),
            response_metadata=self._metadata(result, finish),
        )
        generation = ChatGeneration(message=message, generation_info={"finish_reason": finish})
        return ChatResult(generations=[generation], llm_output=self._llm_output(result))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return _run_sync(self._agenerate(messages, stop, None, **kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # The router decides before it answers, so the final answer is known only at the
        # end of the run; it is then streamed in word-sized chunks, usage on the last one.
        result, stop = await self._route(messages, stop, kwargs)
        for piece in chunk_text(_cut(result.answer or "", stop)):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                await run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        tool_calls = output_tool_calls(result.tool_calls)
        finish = _finish_reason(result, tool_calls)
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    ToolCallChunk(
                        name=c["name"],
                        args=json.dumps(c["args"]),
                        id=c["id"],
                        index=i,
                        type="tool_call_chunk",
                    )
                    for i, c in enumerate(tool_calls)
                ],
                usage_metadata=_usage(result),
                response_metadata=self._metadata(result, finish),
                chunk_position="last",
            ),
            generation_info={"finish_reason": finish},
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        async def collect() -> list[ChatGenerationChunk]:
            return [c async for c in self._astream(messages, stop, None, **kwargs)]

        for chunk in _run_sync(collect()):
            if run_manager is not None and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _route(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[RouteResult, list[str]]:
        unknown = sorted(set(kwargs) - _CALL_KEYS)
        if unknown:
            raise ConfigError(
                f"CORLChatModel does not take {', '.join(map(repr, unknown))}; it takes "
                f"{', '.join(sorted(_CALL_KEYS - {'query_id'}))} and stop"
            )
        stop = list(stop or self.stop or [])
        chat = self._chat_request(messages, stop, kwargs)
        run = self.router.arun(
            self.query_builder(messages),
            tier=self._tier(kwargs),
            tenant=kwargs.get("tenant") or self.tenant,
            query_id=kwargs.get("query_id"),
            chat=chat,
        )
        timeout = kwargs.get("timeout", self.timeout)
        # The experts' model runs are the router's business: reported to the caller's
        # callbacks they would count the same tokens twice (this reply's usage has them all,
        # response_metadata["calls"] each call, the router's spans trace them).
        token = var_child_runnable_config.set(None)
        try:
            if timeout is None:
                result = await run
            else:
                async with asyncio.timeout(timeout):
                    result = await run
        except TimeoutError as exc:
            raise QueryTimeoutError(
                f"the routed run did not finish within timeout={timeout}s; calls in "
                "flight were settled at their reserved amount",
                timeout_s=float(timeout or 0.0),
            ) from exc
        finally:
            var_child_runnable_config.reset(token)
        error = unanswered_error(result)
        if error is not None:
            raise error
        return result, stop

    def _chat_request(
        self, messages: list[BaseMessage], stop: list[str], kwargs: Mapping[str, Any]
    ) -> ChatRequest | None:
        """What the experts get beyond the query; None for a plain chat without options."""
        options = {
            "tools": tuple(kwargs.get("tools") or ()),
            "tool_choice": kwargs.get("tool_choice"),
            "parallel_tool_calls": kwargs.get("parallel_tool_calls"),
            "response_format": kwargs.get("response_format"),
            "stop": tuple(stop),
            "max_tokens": kwargs.get("max_tokens", self.max_tokens),
            "temperature": kwargs.get("temperature", self.temperature),
        }
        if (
            not any(options.values())
            and options["temperature"] is None
            and not has_tool_turns(messages)
        ):
            return None
        return ChatRequest(messages=tuple(messages), **options)

    def _metadata(self, result: RouteResult, finish: str = "stop") -> dict[str, Any]:
        return {
            "model_name": f"corl-{result.tier}",
            "model_provider": "corl_graph",
            "finish_reason": finish,
            **result_metadata(result),
        }

    def _llm_output(self, result: RouteResult) -> dict[str, Any]:
        usage = _usage(result)
        return {
            "model_name": f"corl-{result.tier}",
            "token_usage": {
                "prompt_tokens": usage["input_tokens"],
                "completion_tokens": usage["output_tokens"],
                "total_tokens": usage["total_tokens"],
                "cost_usd": result.cost_usd,
            },
        }


def _route_kwargs(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Explicit keyword arguments win over ``configurable``, which wins over the fields."""
    configurable = (config or {}).get("configurable") or {}
    merged = {k: configurable[k] for k in _ROUTE_KEYS if configurable.get(k) is not None}
    merged.update(kwargs)
    return merged


def _finish_reason(result: RouteResult, tool_calls: Sequence[Any]) -> str:
    return "tool_calls" if tool_calls else "stop"


def _cut(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop sequence, as OpenAI's ``stop`` does."""
    cuts = [i for s in stop if s and (i := text.find(s)) >= 0]
    return text[: min(cuts)] if cuts else text


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
