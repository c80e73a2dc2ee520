"""The final answer as a stream of tokens for LangGraph's ``stream_mode="messages"``.

The router decides before it answers, so the answer is known whole in the ``answer`` node.
When the run is streamed with ``stream_mode="messages"`` (a streaming callback handler is in
the node's config), the node plays it through ``AnswerStream``, a chat model that only
repeats it in word-sized chunks, so the stream shows the router's answer token by token with
``metadata["langgraph_node"] == "answer"``. Experts' own replies are tagged ``nostream`` by
``ChatModelExpert`` unless it is built with ``stream_replies=True``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables.config import ensure_config
from langchain_core.tracers._streaming import _StreamingCallbackHandler
from pydantic import Field

__all__ = ["AnswerStream", "stream_answer"]

_PIECE = re.compile(r"\s*\S+\s*|\s+")


class AnswerStream(BaseChatModel):
    """Repeats ``text`` (and ``tool_calls``) as a streamed AI message; costs nothing."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "corl-answer"

    def _message(self) -> AIMessage:
        return AIMessage(self.text, tool_calls=self.tool_calls)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._message())])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks():
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks():
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _chunks(self) -> Iterator[ChatGenerationChunk]:
        for m in _PIECE.finditer(self.text):
            yield ChatGenerationChunk(message=AIMessageChunk(content=m.group(0)))
        if self.tool_calls:
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", tool_calls=self.tool_calls)  # type: ignore[arg-type]
            )


def _streaming(callbacks: Any) -> bool:
    handlers: Sequence[Any]
    if isinstance(callbacks, BaseCallbackManager):
        handlers = callbacks.handlers
    elif isinstance(callbacks, Sequence):
        handlers = callbacks
    else:
        return False
    return any(isinstance(h, _StreamingCallbackHandler) for h in handlers)


async def stream_answer(text: str, tool_calls: Sequence[Mapping[str, Any]]) -> None:
    """Play the answer through ``AnswerStream`` when the run is being streamed."""
    config = ensure_config()
    if not (text or tool_calls) or not _streaming(config.get("callbacks")):
        return
    calls = [
        {
            "name": c.get("name", ""),
            "args": dict(c.get("args") or {}),
            "id": c.get("id"),
            "type": "tool_call",
        }
        for c in tool_calls
    ]
    model = AnswerStream(text=text, tool_calls=calls)
    async for _ in model.astream([], config):
        pass
