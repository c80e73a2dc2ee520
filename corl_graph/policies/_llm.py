"""The LLM controller: any OpenAI-compatible chat endpoint (vLLM first of all) via LangChain."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from corl_graph._exceptions import ConfigError, PolicyError
from corl_graph.policies._base import Decision, PolicyView
from corl_graph.protocol import parse_action, render_system_prompt, render_user_prompt
from corl_graph.trajectories import Segment

__all__ = ["LLMPolicy", "Transport"]

# "openai" calls the ChatOpenAI's own AsyncOpenAI client with the payload ChatOpenAI would
# send, skipping LangChain's run manager: same request, same features, about half the
# client overhead per step (benchmarks/bench_controller.py). "auto" takes it for a
# ChatOpenAI pointed at a self-hosted server (vLLM) and LangChain's path otherwise.
Transport = Literal["auto", "langchain", "openai"]


class LLMPolicy:
    """A chat model that speaks the controller protocol (``corl_graph.protocol``).

    Each step sends the whole transcript (system prompt with expert descriptors, the budget
    token and query, then the controller's turns and the observations) and parses the reply.

    Token ids and log-probs of what the controller wrote are kept, so runs can be trained
    on. ChatOpenAI (langchain-openai 1.7) keeps ``logprobs`` in ``response_metadata`` but
    drops vLLM's ``token_ids`` / ``prompt_token_ids``; so for a ChatOpenAI pointed at a
    ``base_url`` (vLLM) the policy asks vLLM for ``logprobs`` with
    ``return_tokens_as_token_ids``, which names every sampled token ``"token_id:N"`` in the
    log-probs, one entry per token: ids and log-probs come back aligned by construction.
    ChatOpenAI without a ``base_url`` (api.openai.com rejects vLLM's extra fields) is left
    as it is, and so is any other chat model; ``response_metadata["token_ids"]`` is used
    when a model puts them there.

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
        transport: Transport = "auto",
    ):
        if not isinstance(model, BaseChatModel):
            raise ConfigError(f"LLMPolicy needs a LangChain BaseChatModel, got {type(model)}")
        if not timeout_s > 0:
            raise ConfigError(f"LLMPolicy timeout_s must be > 0, got {timeout_s!r}")
        self.name = name or f"llm({getattr(model, 'model_name', None) or type(model).__name__})"
        self.timeout_s = timeout_s
        if transport not in ("auto", "langchain", "openai"):
            raise ConfigError(
                f"transport must be 'auto', 'langchain' or 'openai', got {transport!r}"
            )
        has_client = getattr(model, "async_client", None) is not None and hasattr(
            model, "_get_request_payload"
        )
        if transport == "openai" and not has_client:
            raise ConfigError(
                f"transport='openai' needs a ChatOpenAI-style model with an async_client, got "
                f"{type(model).__name__}; use transport='langchain'"
            )
        self._capture: dict[str, Any] = (
            {"logprobs": True, "extra_body": _VLLM_CAPTURE}
            if capture_logprobs and _is_vllm_like(model)
            else {}
        )
        self._chat: Any = model
        self.transport: Literal["langchain", "openai"] = (
            "openai"
            if transport == "openai"
            or (transport == "auto" and has_client and _is_vllm_like(model))
            else "langchain"
        )
        self._model: Any = model.bind(**self._capture) if self._capture else model

    def messages(self, view: PolicyView) -> list[BaseMessage]:
        """The chat the controller sees at this step."""
        out: list[BaseMessage] = [
            SystemMessage(render_system_prompt(view.experts)),
            HumanMessage(render_user_prompt(view.query, view.tier.name, view.remaining_usd)),
        ]
        for turn in view.transcript:
            is_controller = turn.role == "controller"
            out.append(AIMessage(turn.text) if is_controller else HumanMessage(turn.text))
        return out

    async def decide(self, view: PolicyView) -> Decision:
        messages = self.messages(view)
        call = (
            self._via_openai(messages)
            if self.transport == "openai"
            else self._model.ainvoke(messages)
        )
        try:
            reply = await asyncio.wait_for(call, self.timeout_s)
        except TimeoutError as exc:
            msg = f"controller {self.name} did not answer in {self.timeout_s}s"
            raise PolicyError(msg) from exc
        except Exception as exc:  # any transport or server failure of the endpoint
            msg = f"controller {self.name} failed: {type(exc).__name__}: {exc}"
            raise PolicyError(msg) from exc
        text = reply.content if isinstance(reply.content, str) else str(reply.content)
        parsed = parse_action(text, experts=[e.name for e in view.experts])
        return Decision(
            parsed.action,
            raw=text,
            format_error=parsed.error,
            segments=(*_context_delta(view, messages), _generated(reply, text)),
        )

    async def _via_openai(self, messages: list[BaseMessage]) -> AIMessage:
        """The request ChatOpenAI would send, on its own client; the reply as an AIMessage
        with the same ``response_metadata`` keys the LangChain path fills."""
        payload = self._chat._get_request_payload(messages, **self._capture)
        response = await self._chat.async_client.create(**payload)
        choice = response.choices[0]
        logprobs = choice.logprobs.model_dump() if choice.logprobs is not None else None
        extra = choice.model_extra or {}
        return AIMessage(
            content=choice.message.content or "",
            response_metadata={
                "logprobs": logprobs,
                "token_ids": extra.get("token_ids"),
                "finish_reason": choice.finish_reason,
                "model_name": response.model,
            },
        )


def _context_delta(view: PolicyView, messages: list[BaseMessage]) -> list[Segment]:
    """The context that is new at this step: the whole prompt first, then the latest
    observation."""
    if view.step == 0 or not view.transcript:
        system, prompt = str(messages[0].content), str(messages[1].content)
        return [Segment("system", system), Segment("prompt", prompt)]
    last = view.transcript[-1]
    return [Segment("observation", last.text)] if last.role == "observation" else []


# vLLM request fields: log-probs name tokens "token_id:N"; return_token_ids adds the ids of
# prompt and reply to the response (kept by raw clients, dropped by ChatOpenAI).
_VLLM_CAPTURE = {"return_tokens_as_token_ids": True, "return_token_ids": True}
_TOKEN_ID_PREFIX = "token_id:"


def _is_vllm_like(model: BaseChatModel) -> bool:
    """A ChatOpenAI-style model pointed at a self-hosted OpenAI-compatible server."""
    fields = type(model).model_fields
    return "logprobs" in fields and bool(getattr(model, "openai_api_base", None))


def _generated(reply: BaseMessage, text: str) -> Segment:
    """The controller's segment, with token ids and log-probs when the endpoint sent them."""
    meta: dict[str, Any] = getattr(reply, "response_metadata", {}) or {}
    content = (meta.get("logprobs") or {}).get("content") or []
    logprobs = tuple(float(t["logprob"]) for t in content if "logprob" in t)
    token_ids = _ids_from_logprobs(content)
    if not token_ids:
        token_ids = tuple(int(t) for t in (meta.get("token_ids") or ()))
    if len(token_ids) != len(logprobs):
        logprobs = ()  # unaligned log-probs would train the wrong tokens
    return Segment("controller", text, token_ids, logprobs)


def _ids_from_logprobs(content: list[dict[str, Any]]) -> tuple[int, ...]:
    """Ids from vLLM's ``"token_id:N"`` names; () unless every entry carries one."""
    ids: list[int] = []
    for entry in content:
        token = entry.get("token")
        if not isinstance(token, str) or not token.startswith(_TOKEN_ID_PREFIX):
            return ()
        try:
            ids.append(int(token[len(_TOKEN_ID_PREFIX) :]))
        except ValueError:
            return ()
    return tuple(ids)
