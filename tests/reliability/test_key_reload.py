"""A revoked API key stops working without a restart: the server re-reads its config file's
keys when the file changes (and on SIGHUP). Deferred from the last round (issue 19)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from corl_graph.integrations import ServerConfig, ServerThread, _keys, create_app

from corl_graph.budget import InMemoryLedger, default_tiers
from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import RouterConfig
from corl_graph.policies import AlwaysExpert
from corl_graph.testing import FakeChatModel

OLD, NEW = "sk-acme-old-0123456789", "sk-acme-new-0123456789"


def _file(path: Path, keys: list[str], revoked: tuple[str, ...] = (), extra: str = "") -> None:
    data: dict[str, Any] = {
        "tenants": [
            {"name": "acme", "limit_usd": 1.0, "api_keys": keys, "revoked_api_keys": list(revoked)}
        ],
        "ledger_url": "memory://",
    }
    path.write_text(json.dumps(data) + extra)


def _status(server: ServerThread, key: str) -> int:
    return httpx.get(
        f"{server.url}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=10
    ).status_code


def test_revoked_and_new_keys_take_effect_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_keys, "RELOAD_S", 0.0)
    path = tmp_path / "serve.json"
    _file(path, [OLD])
    small = ChatModelExpert("small", FakeChatModel("4"), PriceSheet(1.0, 1.0))
    rc = RouterConfig(
        experts=[small],
        policy=AlwaysExpert(["small"]),
        ledger=InMemoryLedger(),
        tiers=default_tiers(),
        default_tier="low",
    )
    app = create_app(ServerConfig.load(path), router_config=rc, config_path=path)
    with ServerThread(app) as server:
        assert (_status(server, OLD), _status(server, NEW)) == (200, 401)
        _file(path, [OLD, NEW], revoked=(OLD,))  # revoke the leaked key, hand out a new one
        assert (_status(server, OLD), _status(server, NEW)) == (401, 200)
        with caplog.at_level(logging.ERROR, "corl_graph.server"):
            _file(path, [OLD], extra="{ not json")  # a half-written file changes nothing
            assert (_status(server, OLD), _status(server, NEW)) == (401, 200)
        assert any("not reloaded" in r.getMessage() for r in caplog.records)
        assert NEW not in caplog.text and OLD not in caplog.text


def test_sighup_forces_a_reload_and_new_tenants_need_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "serve.json"
    _file(path, [OLD])
    seen: list[tuple[dict[str, str], set[str]]] = []
    watcher = _keys.KeyFile(path, {"acme"}, lambda k, r: seen.append((k, r)), clock=lambda: 0.0)
    watcher.check()  # unchanged, and within RELOAD_S: nothing read
    data = json.loads(path.read_text())
    data["tenants"].append({"name": "zed", "limit_usd": 1, "api_keys": ["sk-zed-0123"]})
    data["tenants"][0]["revoked_api_keys"] = [OLD]
    path.write_text(json.dumps(data))
    watcher.check()
    assert seen == []  # the clock has not moved: no stat yet
    with caplog.at_level(logging.WARNING, "corl_graph.server"):
        watcher.poke()  # what SIGHUP does
        watcher.check()
    assert seen == [({}, {OLD})]  # zed's key ignored (new tenant), OLD revoked
    assert "new tenants need a restart" in caplog.text
