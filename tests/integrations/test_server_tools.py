"""The server's OpenAI surface for tools and formats, driven by the official openai client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from corl_graph.integrations import ServerConfig, ServerThread, create_app
from pydantic import BaseModel
from tool_fakes import arithmetic, generic, json_replier, tool_router

from corl_graph.budget import InMemoryLedger

KEY = "sk-acme"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.title()} two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    }
    for name in ("add", "multiply")
]


class Person(BaseModel):
    name: str
    age: int


def _start(*scripts: Any) -> ServerThread:
    router, _ = tool_router(*scripts, ledger=InMemoryLedger())
    config = ServerConfig.parse(
        {"tenants": [{"name": "acme", "limit_usd": 1.0, "api_keys": [KEY]}]}
    )
    return ServerThread(create_app(config, router_config=router.config)).start()


@pytest.fixture
def server() -> Iterator[ServerThread]:
    running = _start(arithmetic, arithmetic)
    yield running
    running.stop()


@pytest.fixture
def client(server: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=20) as c:
        yield c


def test_tool_calls_come_back_in_openais_format_and_the_task_completes(
    client: openai.OpenAI,
) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is (2 + 3) * 4?"}]
    first = client.chat.completions.create(
        model="corl-high", messages=messages, tools=TOOLS, tool_choice="required"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 2, "b": 3}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "5"},
    ]
    second = client.chat.completions.create(model="corl-high", messages=messages, tools=TOOLS)
    call2 = second.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call2.function.name == "multiply"
    messages += [
        second.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call2.id, "content": "20"},
    ]
    final = client.chat.completions.create(model="corl-high", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "The answer is 20."
    assert final.choices[0].finish_reason == "stop"


def test_streamed_tool_calls_are_openai_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="corl-high",
        messages=[{"role": "user", "content": "What is (2 + 3) * 4?"}],
        tools=TOOLS,
        stream=True,
    )
    deltas = [c.choices[0] for c in stream if c.choices]
    calls = [tc for d in deltas for tc in (d.delta.tool_calls or [])]
    assert [(c.index, c.function.name) for c in calls] == [(0, "add")]  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"a": 2, "b": 3}  # type: ignore[union-attr,arg-type]
    assert deltas[-1].finish_reason == "tool_calls"


def test_structured_output_with_the_official_client() -> None:
    ada = json_replier({"name": "Ada", "age": 36})
    running = _start(ada, ada, generic)  # the priciest expert (generic) is outvoted
    try:
        with openai.OpenAI(base_url=running.url + "/v1", api_key=KEY, max_retries=0) as c:
            parsed = c.chat.completions.parse(
                model="corl-high",
                messages=[{"role": "user", "content": "Who? Answer in JSON."}],
                response_format=Person,
            )
            assert parsed.choices[0].message.parsed == Person(name="Ada", age=36)
            mode = c.chat.completions.create(
                model="corl-high",
                messages=[{"role": "user", "content": "Who? Answer in JSON."}],
                response_format={"type": "json_object"},
            )
            assert json.loads(mode.choices[0].message.content or "") == {"name": "Ada", "age": 36}
    finally:
        running.stop()


def test_stop_and_max_tokens_are_honoured(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="corl-high",
        messages=[{"role": "user", "content": "What is (2 + 3) * 4?"}],
        stop=["0"],
        max_completion_tokens=16,
    )
    assert reply.choices[0].message.content == "2"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function"}]}, "tools.0.function"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "divide"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"temperature": 3}, "temperature"),
    ],
)
def test_bad_fields_are_a_400_naming_them(
    server: ServerThread, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "corl-high", "messages": [{"role": "user", "content": "hi"}], **extra}
    r = httpx.post(
        server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_models_retrieve_and_405_allow(client: openai.OpenAI, server: ServerThread) -> None:
    assert client.models.retrieve("corl-low").id == "corl-low"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    r = httpx.delete(
        server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_openapi_documents_bodies_auth_and_errors(server: ServerThread) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    post = spec["paths"]["/v1/chat/completions"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    assert "tools" in spec["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }
    assert post["security"] == [{"bearerAuth": []}]
    assert {"400", "401", "404", "429", "502"} <= set(post["responses"])
    assert "security" not in spec["paths"]["/health"]["get"]
