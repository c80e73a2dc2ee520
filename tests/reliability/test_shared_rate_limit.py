"""Rate limits shared across replicas: two servers on one Redis enforce one limit per key
(deferred from the last round, issue 19). Skips when Redis or its client is missing."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest
from corl_graph.integrations import ServerConfig, ServerThread, create_app

from corl_graph.budget import InMemoryLedger, default_tiers
from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import RouterConfig
from corl_graph.policies import AlwaysExpert
from corl_graph.testing import FakeChatModel

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_reason() -> str | None:
    try:
        import redis
    except ImportError:
        return "the redis client is not installed (pip install 'corl-graph[redis]')"
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.RedisError as exc:
        return f"Redis at {REDIS_URL} does not answer ({exc})"
    return None


def _replica(key: str, redis_url: str) -> ServerThread:
    config = ServerConfig.parse(
        {
            "tenants": [{"name": "acme", "limit_usd": 1.0, "api_keys": [key]}],
            "ledger_url": "memory://",
            # 3 at once, then one every 100 s: the test never sees a refill
            "rate_limit": {"requests_per_s": 0.01, "burst": 3, "redis_url": redis_url},
        }
    )
    small = ChatModelExpert("small", FakeChatModel("4"), PriceSheet(1.0, 1.0))
    rc = RouterConfig(
        experts=[small],
        policy=AlwaysExpert(["small"]),
        ledger=InMemoryLedger(),
        tiers=default_tiers(),
        default_tier="low",
    )
    return ServerThread(create_app(config, router_config=rc)).start()


def _get(server: ServerThread, key: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=10
    )


@pytest.mark.skipif(_redis_reason() is not None, reason=_redis_reason() or "")
def test_two_replicas_on_one_redis_enforce_one_limit() -> None:
    key = f"sk-{uuid.uuid4().hex}"  # a fresh bucket
    a, b = _replica(key, REDIS_URL), _replica(key, REDIS_URL)
    try:
        statuses = [_get(server, key).status_code for server in (a, b, a, b, a)]
        assert statuses == [200, 200, 200, 429, 429]  # burst 3 across both, not 3 each
        refused = _get(b, key)
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(refused.headers["retry-after"]) >= 1
        other = f"sk-{uuid.uuid4().hex}"  # unknown keys are 401 before any bucket is spent
        assert _get(a, other).status_code == 401
    finally:
        a.stop()
        b.stop()


@pytest.mark.skipif(
    _redis_reason() is not None and "client" in (_redis_reason() or ""),
    reason="the redis client is not installed",
)
def test_an_unreachable_redis_lets_requests_through_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = f"sk-{uuid.uuid4().hex}"
    server = _replica(key, "redis://127.0.0.1:1/0")
    try:
        with caplog.at_level(logging.WARNING, "corl_graph.server"):
            assert [_get(server, key).status_code for _ in range(5)] == [200] * 5
        assert "rate limiter at Redis unavailable" in caplog.text and key not in caplog.text
    finally:
        server.stop()
