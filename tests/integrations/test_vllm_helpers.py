"""vLLM helpers and LLMPolicy's token capture, against an in-process fake of vLLM's API."""

from __future__ import annotations

from typing import Any

import httpx
from corl_graph.integrations import (
    ControllerEndpointCheck,
    check_controller_endpoint,
    vllm_serve_command,
)
from fastapi import FastAPI, Request
from integration_fakes import ScriptedChatModel
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import LLMPolicy

REPLY_IDS = [11, 12, 13]


def fake_vllm(
    *, ids_in_logprobs: bool = True, template_drops: str = ""
) -> tuple[FastAPI, list[Any]]:
    """vLLM's endpoints as far as the controller uses them; requests are recorded."""
    app = FastAPI()
    seen: list[Any] = []

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "ctrl", "object": "model"}]}

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        body = await request.json()
        text = "".join(m["content"] for m in body["messages"]).replace(template_drops or "\0", "")
        return {"count": len(text), "max_model_len": 4096, "tokens": [ord(c) for c in text]}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        return {"prompt": "".join(chr(t) for t in (await request.json())["tokens"])}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        seen.append(body)
        names = [f"token_id:{i}" if ids_in_logprobs else "x" for i in REPLY_IDS]
        logprobs = {
            "content": [
                {"token": n, "logprob": -0.5, "bytes": None, "top_logprobs": []} for n in names
            ]
        }
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "ctrl",
            "prompt_token_ids": [1, 2, 3],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "token_ids": REPLY_IDS,
                    "logprobs": logprobs if body.get("logprobs") else None,
                    "message": {"role": "assistant", "content": "<answer>4</answer>"},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        }

    return app, seen


def test_serve_command_has_the_documented_flags() -> None:
    command = vllm_serve_command(
        "/ckpt", python="/venv/bin/python", port=9000, served_model_name="ctrl"
    )
    assert command[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    for flag in ("--enforce-eager", "--dtype", "bfloat16", "--max-model-len", "512"):
        assert flag in command
    assert command[-2:] == ["--served-model-name", "ctrl"]


async def test_check_passes_on_a_vllm_like_endpoint() -> None:
    app, seen = fake_vllm()
    report = await check_controller_endpoint(
        "http://vllm/v1", "ctrl", transport=httpx.ASGITransport(app)
    )
    assert report.ok, report.problems
    assert report.renders_protocol and report.returns_token_ids
    assert report.prompt_tokens and report.prompt_tokens > 100
    assert seen[0]["max_tokens"] == 1 and seen[0]["return_tokens_as_token_ids"] is True


async def test_check_lists_every_problem() -> None:
    app, _ = fake_vllm(ids_in_logprobs=False, template_drops="<budget:low>")
    report = await check_controller_endpoint(
        "http://vllm", "ctrl", transport=httpx.ASGITransport(app)
    )
    assert not report.ok and not report.renders_protocol and not report.returns_token_ids
    assert len(report.problems) == 2
    missing = await check_controller_endpoint(
        "http://vllm", "other", transport=httpx.ASGITransport(app)
    )
    assert "not served" in missing.problems[0]
    down = await check_controller_endpoint("http://127.0.0.1:9", "ctrl", timeout_s=2)
    assert isinstance(down, ControllerEndpointCheck) and "unreachable" in down.problems[0]


def _controller(app: FastAPI) -> ChatOpenAI:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app))
    return ChatOpenAI(
        model="ctrl",
        base_url="http://vllm/v1",
        api_key=SecretStr("EMPTY"),
        http_async_client=client,
        max_retries=0,
    )


async def test_llm_policy_captures_token_ids_and_logprobs_through_chat_openai() -> None:
    app, seen = fake_vllm()
    expert = ChatModelExpert("small", ScriptedChatModel(), PriceSheet(0.1, 0.4))
    router = Router(RouterConfig([expert], LLMPolicy(_controller(app))))
    result = await router.arun("What is 2 + 2?", tier="low")
    assert result.answer == "4"
    assert seen[0]["logprobs"] is True and seen[0]["return_tokens_as_token_ids"] is True
    controller = [s for s in result.trajectory.segments if s.kind == "controller"]
    assert controller[0].token_ids == tuple(REPLY_IDS)
    assert controller[0].logprobs == (-0.5, -0.5, -0.5)
    assert controller[0].loss_mask == (1, 1, 1)


def test_llm_policy_leaves_api_openai_com_requests_alone() -> None:
    plain = ChatOpenAI(model="gpt-4o-mini", api_key=SecretStr("sk-test"))
    assert LLMPolicy(plain)._model is plain
