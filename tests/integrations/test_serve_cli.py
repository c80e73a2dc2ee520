"""``corl-graph serve``: config files (TOML / JSON), --check, and a real server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from corl_graph.integrations import ServerConfig, ServerThread, create_app
from integration_fakes import free_port

from corl_graph._exceptions import ConfigError
from corl_graph.budget import ENVELOPE_EXPERT, InMemoryLedger, SQLiteLedger
from corl_graph.budget._leases import LEASE_EXPERT
from corl_graph.cli import main

ROWS = [
    {
        "query_id": "q1",
        "split": "test",
        "prompt": "What is 2 + 2?",
        "model": model,
        "correct": 1.0,
        "answer": "4",
        "response": "2 + 2 = 4",
        "input_tokens": 12,
        "output_tokens": 6,
        "cost_usd": cost,
    }
    for model, cost in (("small", 1e-6), ("big", 1e-5))
]


def _write_table(folder: Path) -> None:
    with (folder / "toy.jsonl").open("w") as fh:
        for row in ROWS:
            fh.write(json.dumps(row) + "\n")
    prices = {
        "small": {"input_usd_per_mtok": 0.05, "output_usd_per_mtok": 0.1},
        "big": {"input_usd_per_mtok": 0.5, "output_usd_per_mtok": 1.0},
    }
    (folder / "toy.models.json").write_text(json.dumps(prices))


def _toml(folder: Path, port: int, extra: str = "") -> Path:
    """A server config over two replay experts; ``extra`` adds top-level keys."""
    _write_table(folder)
    path = folder / "server.toml"
    path.write_text(f"""
ledger_url = "sqlite:///{folder / "ledger.db"}"
port = {port}
shutdown_grace_s = 2
{extra}

[[experts]]
kind = "replay"
table = "toy.jsonl"
model = "small"

[[experts]]
kind = "replay"
table = "toy.jsonl"
model = "big"

[policy]
kind = "cascade"
experts = ["small", "big"]

[[tiers]]
name = "low"
max_usd_per_query = 0.001

[[tenants]]
name = "acme"
limit_usd = 1.0
api_key_envs = ["CORL_TEST_ACME_KEY"]
""")
    return path


def test_check_prints_models_from_a_toml_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORL_TEST_ACME_KEY", "sk-acme")
    assert main(["serve", "--config", str(_toml(tmp_path, 0)), "--check"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["models"] == ["corl-low"] and summary["experts"] == ["small", "big"]
    assert summary["tenants"] == ["acme"] and summary["ledger"] == "sqlite"


def test_config_errors_name_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "tenants": [{"name": "a", "limit_usd": 1, "api_keys": ["k"]}],
                "ledgr_url": "memory://",
            }
        )
    )
    with pytest.raises(ConfigError, match="ledgr_url"):
        ServerConfig.load(bad)
    shared = {
        "tenants": [
            {"name": "a", "limit_usd": 1, "api_keys": ["k"]},
            {"name": "b", "limit_usd": 1, "api_keys": ["k"]},
        ]
    }
    with pytest.raises(ConfigError, match="both 'a' and 'b'"):
        ServerConfig.parse(shared).api_keys()
    assert main(["serve", "--config", str(bad), "--check"]) == 2


def test_budget_hold_is_read_checked_and_reaches_the_router(tmp_path: Path) -> None:
    plain = ServerConfig.load(_toml(tmp_path, 0))
    assert plain.budget_hold == "per_attempt"
    assert plain.router_config(InMemoryLedger()).budget_hold == "per_attempt"
    per_query = ServerConfig.load(_toml(tmp_path, 0, 'budget_hold = "per_query"'))
    assert per_query.router_config(InMemoryLedger()).budget_hold == "per_query"
    bad = _toml(tmp_path, 0, 'budget_hold = "per_call"')
    with pytest.raises(ConfigError, match=r"budget_hold\n.*'per_attempt', 'per_query' or 'leased'"):
        ServerConfig.load(bad)
    with pytest.raises(ConfigError, match="budget_hold"):
        ServerConfig.parse({"tenants": [{"name": "a", "limit_usd": 1}], "budget_hold": None})
    assert main(["serve", "--config", str(bad), "--check"]) == 2
    leased = ServerConfig.load(
        _toml(tmp_path, 0, 'budget_hold = "leased"\nbudget_lease_usd = 0.5')
    ).router_config(InMemoryLedger())
    assert leased.budget_hold == "leased" and leased.leases is not None
    assert leased.leases.slice_usd == 0.5
    with pytest.raises(ConfigError, match="budget_lease_usd"):
        ServerConfig.load(_toml(tmp_path, 0, "budget_lease_usd = 0"))


async def _ask_then_stop(config: ServerConfig, *, times: int) -> list[Any]:
    """Serve ``config``, ask it "2 + 2" ``times`` times as tenant acme, stop the server."""
    server = ServerThread(create_app(config)).start()
    replies = []
    try:
        async with openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key="sk-acme", max_retries=0
        ) as client:
            for _ in range(times):
                replies.append(
                    await client.chat.completions.create(
                        model="corl-low",
                        messages=[{"role": "user", "content": "What is 2 + 2?"}],
                        metadata={"query_id": "q1"},  # the replay table's id
                    )
                )
    finally:
        server.stop()
    return replies


async def _acme_ledger(folder: Path) -> tuple[list[Any], Any]:
    """The server's SQLite ledger after it stopped: acme's audit trail and spend."""
    ledger = SQLiteLedger(folder / "ledger.db")
    try:
        return await ledger.audit(tenant="acme"), await ledger.tenant_spend("acme")
    finally:
        await ledger.aclose()


async def test_a_leased_server_holds_one_slice_and_settles_it_on_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORL_TEST_ACME_KEY", "sk-acme")
    config = ServerConfig.load(_toml(tmp_path, 0, 'budget_hold = "leased"'))
    # stopping the server drains it, then settles the open slice at what its queries cost
    replies = await _ask_then_stop(config, times=3)
    costs = [(r.model_extra or {})["corl"]["cost_usd"] for r in replies]
    entries, spend = await _acme_ledger(tmp_path)
    assert [(e.event, e.expert) for e in entries] == [
        ("reserved", LEASE_EXPERT),
        ("settled", LEASE_EXPERT),
    ]
    assert entries[0].amount_usd == pytest.approx(1.0)  # budget_lease_usd's default
    assert spend.settled_usd == pytest.approx(sum(costs)) and spend.held_usd == 0


async def test_a_per_query_server_holds_one_envelope_per_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORL_TEST_ACME_KEY", "sk-acme")
    config = ServerConfig.load(_toml(tmp_path, 0, 'budget_hold = "per_query"'))
    (reply,) = await _ask_then_stop(config, times=1)
    assert reply.choices[0].message.content == "4"
    corl = (reply.model_extra or {})["corl"]
    assert len(corl["calls"]) == 2  # the cascade asked both experts ...
    entries, spend = await _acme_ledger(tmp_path)  # a fresh ledger: this query only
    # ... and the ledger saw one hold: the tier's whole cap, settled at the calls' cost.
    assert [(e.event, e.expert) for e in entries] == [
        ("reserved", ENVELOPE_EXPERT),
        ("settled", ENVELOPE_EXPERT),
    ]
    assert entries[0].amount_usd == pytest.approx(0.001)
    assert entries[1].amount_usd == pytest.approx(corl["cost_usd"])
    assert spend.settled_usd == pytest.approx(corl["cost_usd"]) and spend.held_usd == 0


def test_serve_subprocess_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = _toml(tmp_path, port)
    env = {**os.environ, "CORL_TEST_ACME_KEY": "sk-acme"}
    command = [
        sys.executable,
        "-c",
        "import sys; from corl_graph.cli import main; sys.exit(main())",
        "serve",
        "--config",
        str(config),
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        with openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-acme", max_retries=0
        ) as client:
            reply = client.chat.completions.create(
                model="corl-low", messages=[{"role": "user", "content": "What is 2 + 2?"}]
            )
        assert reply.choices[0].message.content == "4"
        assert (reply.model_extra or {})["corl"]["cost_usd"] > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # uvicorn re-raises the signal once its shutdown is complete, as a supervisor expects.
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()[-2000:]
    assert "Application shutdown complete" in err.decode()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("the server did not come up")
