"""The LLM controller: any OpenAI-compatible chat endpoint (vLLM first of all) via LangChain."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from corl_graph._exceptions import ConfigError, PolicyError
from corl_graph.policies._base import Decision, PolicyView
from corl_graph.protocol import parse_action, render_system_prompt, render_user_prompt
from corl_graph.trajectories import Segment

__all__ = ["LLMPolicy"]


class LLMPolicy:
    """A chat model that speaks the controller protocol (``corl_graph.protocol``).

    Each step sends the whole transcript (system prompt with expert descriptors, the budget
    token and query, then the controller's turns and the observations) and parses the reply.
    Log-probs and token ids are kept when the endpoint returns them (vLLM does with
    ``logprobs=True`` and ``return_token_ids``), so runs can be trained on.

    >>> from langchain_core.language_models import FakeListChatModel
    >>> p = LLMPolicy(FakeListChatModel(responses=["<answer>4</answer>"]), name="fake")
    >>> p.name
    'fake'
    """

    def __init__(
        self,
        model: BaseChatModel,
        *,
        name: str | None = None,
        timeout_s: float = 60.0,
        capture_logprobs: bool = True,
    ):
        if not isinstance(model, BaseChatModel):
            raise ConfigError(f"LLMPolicy needs a LangChain BaseChatModel, got {type(model)}")
        if not timeout_s > 0:
            raise ConfigError(f"LLMPolicy timeout_s must be > 0, got {timeout_s!r}")
        self.name = name or f"llm({getattr(model, 'model_name', None) or type(model).__name__})"
        self.timeout_s = timeout_s
        self._model: Any = model
        if capture_logprobs and "logprobs" in type(model).model_fields:
            self._model = model.bind(logprobs=True, extra_body={"return_token_ids": True})

    def messages(self, view: PolicyView) -> list[BaseMessage]:
        """The chat the controller sees at this step."""
        out: list[BaseMessage] = [
            SystemMessage(render_system_prompt(view.experts)),
            HumanMessage(render_user_prompt(view.query, view.tier.name, view.remaining_usd)),
        ]
        for turn in view.transcript:
            out.append(AIMessage(turn.text) if turn.role == "controller" else HumanMessage(turn.text))
        return out

    async def decide(self, view: PolicyView) -> Decision:
        messages = self.messages(view)
        try:
            reply = await asyncio.wait_for(self._model.ainvoke(messages), self.timeout_s)
        except TimeoutError as exc:
            raise PolicyError(f"controller {self.name} did not answer in {self.timeout_s}s") from exc
        except Exception as exc:  # any transport or server failure of the endpoint
            raise PolicyError(f"controller {self.name} failed: {type(exc).__name__}: {exc}") from exc
        text = reply.content if isinstance(reply.content, str) else str(reply.content)
        parsed = parse_action(text, experts=[e.name for e in view.experts])
        return Decision(
            parsed.action,
            raw=text,
            format_error=parsed.error,
            segments=(*_context_delta(view, messages), _generated(reply, text)),
        )


def _context_delta(view: PolicyView, messages: list[BaseMessage]) -> list[Segment]:
    """The context that is new at this step: the whole prompt first, then the latest observation."""
    if view.step == 0 or not view.transcript:
        return [Segment("system", str(messages[0].content)), Segment("prompt", str(messages[1].content))]
    last = view.transcript[-1]
    return [Segment("observation", last.text)] if last.role == "observation" else []


def _generated(reply: BaseMessage, text: str) -> Segment:
    meta: dict[str, Any] = getattr(reply, "response_metadata", {}) or {}
    content = (meta.get("logprobs") or {}).get("content") or []
    logprobs = tuple(float(t["logprob"]) for t in content if "logprob" in t)
    token_ids = tuple(int(t) for t in (meta.get("token_ids") or ()))
    if token_ids and len(token_ids) != len(logprobs):
        logprobs = ()
    if not token_ids:
        logprobs = ()
    return Segment("controller", text, token_ids, logprobs)
