"""The OpenAI-compatible server, driven by the official openai client against uvicorn."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from corl_graph.integrations import ServerConfig, ServerThread, create_app
from integration_fakes import make_config

from corl_graph.budget import InMemoryLedger

SENTENCE = "Paris is the capital of France"
KEYS = {"acme": "sk-acme", "beta": "sk-beta", "broke": "sk-broke"}


def _server_config(**overrides: Any) -> ServerConfig:
    return ServerConfig.parse(
        {
            "tenants": [
                {"name": "acme", "limit_usd": 1.0, "api_keys": [KEYS["acme"]]},
                {"name": "beta", "limit_usd": 1.0, "period": "day", "api_keys": [KEYS["beta"]]},
                {"name": "broke", "limit_usd": 0.0, "api_keys": [KEYS["broke"]]},
            ],
            "max_request_bytes": 4096,
            **overrides,
        }
    )


def _start(
    ledger: InMemoryLedger | None = None, grace_s: float = 5.0, **router: Any
) -> ServerThread:
    ledger = ledger or InMemoryLedger()
    app = create_app(
        _server_config(shutdown_grace_s=grace_s), router_config=make_config(ledger=ledger, **router)
    )
    return ServerThread(app, graceful_timeout_s=grace_s).start()


@pytest.fixture
def ledger() -> InMemoryLedger:
    return InMemoryLedger()


@pytest.fixture
def server(ledger: InMemoryLedger) -> Iterator[ServerThread]:
    running = _start(ledger, reply=SENTENCE)
    yield running
    running.stop()


_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _client(server: ServerThread, tenant: str = "acme", retries: int = 0) -> openai.OpenAI:
    client = openai.OpenAI(
        base_url=server.url + "/v1",
        api_key=KEYS.get(tenant, tenant),
        max_retries=retries,
        timeout=20,
    )
    _OPEN.append(client)
    return client


def test_models_health_and_a_completion(server: ServerThread) -> None:
    client = _client(server)
    assert [m.id for m in client.models.list()] == ["corl-zero", "corl-low", "corl-high"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    reply = client.chat.completions.create(
        model="corl-high", messages=[{"role": "user", "content": "Capital of France?"}]
    )
    assert reply.choices[0].message.content == SENTENCE
    assert reply.usage is not None and reply.usage.total_tokens == 28
    assert (reply.usage.model_extra or {})["cost_usd"] > 0
    assert (reply.model_extra or {})["corl"]["tier"] == "high"


def test_streaming_delivers_the_answer_in_chunks_with_usage(server: ServerThread) -> None:
    stream = _client(server).chat.completions.create(
        model="corl-low",
        stream=True,
        stream_options={"include_usage": True},
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == SENTENCE
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 28


def test_each_key_spends_and_sees_only_its_own_tenant(server: ServerThread) -> None:
    _client(server, "acme").chat.completions.create(
        model="corl-high",
        messages=[{"role": "user", "content": "q"}],
        extra_body={"tenant": "beta", "user": "beta"},
    )  # the request cannot pick the tenant
    acme = httpx.get(
        server.url + "/v1/budget", headers={"Authorization": f"Bearer {KEYS['acme']}"}
    ).json()
    beta = httpx.get(
        server.url + "/v1/budget", headers={"Authorization": f"Bearer {KEYS['beta']}"}
    ).json()
    assert acme["tenant"] == "acme" and acme["committed_usd"] > 0
    assert beta["tenant"] == "beta" and beta["committed_usd"] == 0 and beta["period"] == "day"


def test_errors_have_openai_status_codes_and_shape(server: ServerThread) -> None:
    messages: Any = [{"role": "user", "content": "q"}]
    with pytest.raises(openai.AuthenticationError) as auth:
        _client(server, "sk-nobody").chat.completions.create(model="corl-low", messages=messages)
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        _client(server).chat.completions.create(model="gpt-4o", messages=messages)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        _client(server).chat.completions.create(model="corl-low", messages=messages, n=2)
    assert bad.value.code == "invalid_request" and bad.value.param == "n"
    with pytest.raises(openai.BadRequestError):
        _client(server).chat.completions.create(model="corl-low", messages=[])
    headers = {"Authorization": f"Bearer {KEYS['acme']}", "Content-Type": "application/json"}
    raw = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", headers=headers)
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_request"
    huge = {"model": "corl-low", "messages": [{"role": "user", "content": "x" * 5000}]}
    big = httpx.post(server.url + "/v1/chat/completions", headers=headers, json=huge)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"


def test_budget_exhaustion_is_429_and_not_retried(server: ServerThread) -> None:
    messages: Any = [{"role": "user", "content": "q"}]
    client = _client(server, "broke", retries=3)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as tenant_cap:
        client.chat.completions.create(model="corl-high", messages=messages)
    assert tenant_cap.value.code == "budget_exhausted"
    assert time.monotonic() - started < 0.5 * 3  # x-should-retry: false stopped the retries
    with pytest.raises(openai.RateLimitError) as tier_cap:
        _client(server).chat.completions.create(model="corl-zero", messages=messages)
    assert tier_cap.value.code == "budget_exhausted"


def test_upstream_failure_is_502() -> None:
    with _start(fail=True) as server, pytest.raises(openai.InternalServerError) as info:
        _client(server).chat.completions.create(
            model="corl-low", messages=[{"role": "user", "content": "q"}]
        )
    assert info.value.status_code == 502 and info.value.code == "upstream_error"


def _request_in_thread(server: ServerThread, out: dict[str, Any]) -> threading.Thread:
    def send() -> None:
        try:
            out["response"] = httpx.post(
                server.url + "/v1/chat/completions",
                timeout=30,
                headers={"Authorization": f"Bearer {KEYS['acme']}"},
                json={"model": "corl-high", "messages": [{"role": "user", "content": "q"}]},
            )
        except httpx.HTTPError as exc:
            out["error"] = exc

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/health").json()["in_flight"] == 0:
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.02)
    return thread


def test_shutdown_lets_in_flight_requests_finish(ledger: InMemoryLedger) -> None:
    server = _start(ledger, grace_s=10.0, delay_s=0.5)
    out: dict[str, Any] = {}
    thread = _request_in_thread(server, out)
    server.stop()
    thread.join(30)
    assert out["response"].status_code == 200
    assert out["response"].json()["choices"][0]["message"]["content"] == "4"


def test_shutdown_settles_reservations_of_cancelled_calls(ledger: InMemoryLedger) -> None:
    import asyncio

    server = _start(ledger, grace_s=0.2, delay_s=30.0)
    out: dict[str, Any] = {}
    thread = _request_in_thread(server, out)
    time.sleep(0.2)  # let the expert call reserve
    server.stop()
    thread.join(30)
    assert "response" not in out or out["response"].status_code >= 500
    spend = asyncio.run(ledger.tenant_spend("acme"))
    assert spend.held_usd == 0  # nothing left held...
    assert spend.settled_usd > 0  # ...the cancelled call is charged at its reserved worst case
