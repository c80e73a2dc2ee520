"""LLMPolicy over ChatOpenAI: the LangChain and the direct-client transports agree."""

import json

import httpx
import pytest
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from corl_graph import ConfigError, PolicyError
from corl_graph.budget import BudgetTier
from corl_graph.policies import LLMPolicy, PolicyView
from corl_graph.protocol import CallExpert, ExpertDescriptor
from corl_graph.testing import FakeChatModel

REPLY = '<think>hard</think><call expert="big">What is 17 * 23?</call>'
TOKENS = [11, 12, 13]


def _completion(request: httpx.Request) -> httpx.Response:
    body = {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "ctl",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": REPLY},
                "logprobs": {
                    "content": [
                        {
                            "token": f"token_id:{t}",
                            "logprob": -0.5,
                            "bytes": None,
                            "top_logprobs": [],
                        }
                        for t in TOKENS
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 3, "total_tokens": 53},
    }
    return httpx.Response(200, json=body)


def _chat(seen: list[dict]) -> ChatOpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return _completion(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ChatOpenAI(
        model="ctl",
        base_url="http://vllm.local/v1",
        api_key=SecretStr("x"),
        http_async_client=client,
        max_retries=0,
        temperature=0.7,
    )


def _view() -> PolicyView:
    return PolicyView(
        query="17*23?",
        query_id="q",
        tier=BudgetTier("low", 0.01),
        tier_names=("low",),
        experts=(ExpertDescriptor("big", 2.5, 10.0),),
        transcript=(),
        steps=(),
        calls=(),
        spent_usd=0.0,
        remaining_usd=0.01,
        step=0,
        max_steps=4,
        budget_exhausted=False,
    )


@pytest.mark.parametrize("transport", ["langchain", "openai"])
async def test_both_transports_capture_the_action_token_ids_and_logprobs(transport: str) -> None:
    seen: list[dict] = []
    policy = LLMPolicy(_chat(seen), transport=transport)  # type: ignore[arg-type]
    decision = await policy.decide(_view())
    assert decision.action == CallExpert("big", "What is 17 * 23?")
    generated = decision.segments[-1]
    assert generated.kind == "controller"
    assert generated.token_ids == tuple(TOKENS) and generated.logprobs == (-0.5,) * 3
    (request,) = seen
    assert request["logprobs"] is True and request["return_tokens_as_token_ids"] is True
    assert request["temperature"] == 0.7 and request["messages"][1]["content"].endswith(
        "<budget:low> remaining=$0.010000"
    )


async def test_the_two_transports_send_the_same_request() -> None:
    a: list[dict] = []
    b: list[dict] = []
    await LLMPolicy(_chat(a), transport="langchain").decide(_view())
    await LLMPolicy(_chat(b), transport="openai").decide(_view())
    assert a == b


def test_auto_picks_the_direct_client_for_a_self_hosted_endpoint() -> None:
    assert LLMPolicy(_chat([])).transport == "openai"
    assert LLMPolicy(FakeChatModel("x")).transport == "langchain"
    with pytest.raises(ConfigError, match="transport='langchain'"):
        LLMPolicy(FakeChatModel("x"), transport="openai")
    with pytest.raises(ConfigError, match="transport must be"):
        LLMPolicy(FakeChatModel("x"), transport="grpc")  # type: ignore[arg-type]


async def test_a_server_error_is_a_policy_error() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    chat = ChatOpenAI(
        model="ctl",
        base_url="http://vllm.local/v1",
        api_key=SecretStr("x"),
        http_async_client=client,
        max_retries=0,
    )
    with pytest.raises(PolicyError, match="failed"):
        await LLMPolicy(chat, transport="openai").decide(_view())
