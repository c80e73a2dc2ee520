"""``corl-graph serve --workers 2``: two server processes on one socket and one SQLite ledger
keep exact books under concurrent tenants, a tenant's cap holds across both, SIGHUP reloads the
keys in every worker, and the configs that cannot be shared across workers are refused.

The servers run as subprocesses on 127.0.0.1 through benchmarks/load_server.py's helpers.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import signal
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from corl_graph.cli import main


def _load_module() -> ModuleType:
    path = Path(__file__).parents[2] / "benchmarks" / "load_server.py"
    spec = importlib.util.spec_from_file_location("corl_load_server_workers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_module()
CAP_USD = 0.002  # acme's limit: a few dozen of its calls, then 429


async def test_two_workers_keep_exact_books_and_the_cap(tmp_path: Path) -> None:
    port = bench.free_port()
    url = f"http://127.0.0.1:{port}"
    config = bench.write_config(tmp_path, port)
    data = json.loads(config.read_text())
    data["tenants"][0]["limit_usd"] = CAP_USD  # acme
    config.write_text(json.dumps(data))
    log = tmp_path / "server.log"
    proc = bench.start_server(config, log, workers=2)
    try:
        await asyncio.to_thread(bench.wait_healthy, url, proc)
        load = await bench.run_load(url, requests=240, concurrency=16, max_seconds=20)
    finally:
        await asyncio.to_thread(bench.stop_server, proc)
    assert proc.returncode == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert text.count("Application startup complete") == 2, text[-2000:]
    assert text.count("Application shutdown complete") == 2, text[-2000:]  # both drained
    books = await bench.audit_ledger(tmp_path / "ledger.db")
    verdict = bench.compare(load, books)
    assert verdict["equal"] and verdict["max_abs_diff_usd"] <= 1e-12, verdict
    assert not books["unclosed"] and not books["settled_twice"]
    for tenant, spend in books["tenants"].items():
        assert spend["held"] == 0.0, (tenant, spend)
    acme = books["tenants"]["acme"]
    assert acme["settled"] <= CAP_USD + 1e-12  # the cap held across both workers
    assert acme["settled"] == pytest.approx(math.fsum(load.cost_by_tenant["acme"]), abs=1e-12)
    assert set(load.errors) <= {"http_429"}, load.errors  # only acme, and only its cap
    assert load.errors["http_429"] > 0, "acme never reached its cap"
    assert all(len(load.cost_by_tenant[t]) == 60 for t in ("beta", "gamma", "delta"))


def _status(url: str, key: str) -> int:
    body = {"model": "corl-medium", "messages": [{"role": "user", "content": bench.prompt_of(1)}]}
    with httpx.Client(base_url=url, timeout=10) as client:  # a new connection each time
        return client.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        ).status_code


async def test_sighup_reloads_the_keys_of_every_worker(tmp_path: Path) -> None:
    port = bench.free_port()
    url = f"http://127.0.0.1:{port}"
    config = bench.write_config(tmp_path, port)
    old, new = "sk-sighup-old-0123456789", "sk-sighup-new-0123456789"
    data = json.loads(config.read_text())
    data["tenants"][0]["api_keys"] = [old]
    config.write_text(json.dumps(data))
    proc = bench.start_server(config, tmp_path / "server.log", workers=2)
    try:
        await asyncio.to_thread(bench.wait_healthy, url, proc)
        assert await asyncio.to_thread(_status, url, old) == 200
        data["tenants"][0]["api_keys"] = [new]
        data["tenants"][0]["revoked_api_keys"] = [old]
        config.write_text(json.dumps(data))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(_status, url, new) != 200:
            assert time.monotonic() < deadline, "SIGHUP did not reload the keys"
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # the supervisor forwards to both workers at once
        for _ in range(8):  # new connections, spread over both workers
            assert await asyncio.to_thread(_status, url, old) == 401
            assert await asyncio.to_thread(_status, url, new) == 200
        assert proc.poll() is None
    finally:
        await asyncio.to_thread(bench.stop_server, proc)
    assert proc.returncode == 0
    # SIGHUP went to both workers, which re-read their keys; none was restarted (uvicorn's
    # own supervisor would restart every worker on SIGHUP).
    assert (tmp_path / "server.log").read_text().count("Application startup complete") == 2


def _config(tmp_path: Path, **extra: object) -> Path:
    path = bench.write_config(tmp_path, 0)
    data = {**json.loads(path.read_text()), **extra}
    path.write_text(json.dumps(data))
    return path


def test_workers_refuse_an_in_memory_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, ledger_url="memory://")
    assert main(["serve", "--config", str(path), "--workers", "2", "--check"]) == 2
    err = capsys.readouterr().err
    assert "--workers 2 needs a ledger the workers share" in err and "memory://" in err
    assert main(["serve", "--config", str(path), "--workers", "1", "--check"]) == 0


def test_workers_refuse_per_process_rate_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, rate_limit={"requests_per_s": 5})
    assert main(["serve", "--config", str(path), "--workers", "3", "--check"]) == 2
    assert "set rate_limit.redis_url" in capsys.readouterr().err
    assert main(["serve", "--config", str(path), "--workers", "0", "--check"]) == 2
