"""The server under load keeps exact books, and a SIGKILL mid-load loses no spend.

Both drive ``corl-graph serve`` as a subprocess on 127.0.0.1 through benchmarks/load_server.py
(a smaller run than the benchmark's), with replayed experts and a SQLite ledger file.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest


def _load_module() -> ModuleType:
    path = Path(__file__).parents[2] / "benchmarks" / "load_server.py"
    spec = importlib.util.spec_from_file_location("corl_load_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    spec.loader.exec_module(module)
    return module


bench = _load_module()
pytestmark = pytest.mark.slow


async def test_small_load_keeps_the_books_exact(tmp_path: Path) -> None:
    port = bench.free_port()
    url = f"http://127.0.0.1:{port}"
    proc = bench.start_server(bench.write_config(tmp_path, port), tmp_path / "server.log")
    try:
        await asyncio.to_thread(bench.wait_healthy, url, proc)
        load = await bench.run_load(url, requests=60, concurrency=8, max_seconds=20)
    finally:
        await asyncio.to_thread(bench.stop_server, proc)
    books = await bench.audit_ledger(tmp_path / "ledger.db")
    verdict = bench.compare(load, books)
    assert load.ok == 60 and not load.errors
    assert verdict["equal"] and verdict["max_abs_diff_usd"] <= 1e-12, verdict
    assert books["reservations"] >= 60 and not books["unclosed"]


async def test_sigkill_mid_load_then_restart_loses_no_spend(tmp_path: Path) -> None:
    port = bench.free_port()
    url = f"http://127.0.0.1:{port}"
    config = bench.write_config(tmp_path, port)
    ledger_file = tmp_path / "ledger.db"
    proc = bench.start_server(config, tmp_path / "server.log")
    try:
        await asyncio.to_thread(bench.wait_healthy, url, proc)
        first = bench.LoadResult()
        load = asyncio.create_task(
            bench.run_load(url, requests=400, concurrency=16, max_seconds=30, result=first)
        )
        while first.ok < 25 and not load.done():
            await asyncio.sleep(0.01)
        proc.kill()  # SIGKILL with requests in flight: no drain, no settle_open
        await asyncio.wait_for(load, 40)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert first.ok >= 25 and first.errors, "the kill did not interrupt the load"
    crashed = await bench.audit_ledger(ledger_file)  # read before the restart touches it

    proc = bench.start_server(config, tmp_path / "server2.log")  # same ledger file
    try:
        await asyncio.to_thread(bench.wait_healthy, url, proc)
        second = await bench.run_load(url, requests=20, concurrency=4, max_seconds=20)
    finally:
        await asyncio.to_thread(bench.stop_server, proc)
    assert second.ok == 20 and not second.errors
    # An operator (or any replica) reconciling once the killed server's leases have run out.
    after = await bench.audit_ledger(ledger_file, reconcile_at=time.time() + 3600)

    for tenant in bench.TENANTS:
        before, now = crashed["tenants"][tenant], after["tenants"][tenant]
        received = math.fsum(first.cost_by_tenant[tenant])
        # Every answer a client received was settled before the kill; none of it was lost.
        assert before["settled"] >= received - 1e-12
        # Restart added exactly the second run's spend; what was held is now charged, expired.
        added = math.fsum(second.cost_by_tenant[tenant])
        assert now["settled"] == pytest.approx(before["settled"] + added, abs=1e-12)
        assert now["held"] == 0.0
        assert now["expired"] == pytest.approx(before["held"], abs=1e-12)
    assert not after["unclosed"] and not after["settled_twice"]
    assert after["expired_lines"] == len(crashed["unclosed"])
