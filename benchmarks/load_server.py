"""Load on the OpenAI-compatible server, then an exact audit of what the ledger charged.

    python benchmarks/load_server.py                  # writes benchmarks/results/load_server.json
    python benchmarks/load_server.py --requests 300 --concurrency 16 --max-seconds 30
    python benchmarks/load_server.py --workers 2       # corl-graph serve --workers 2
    python benchmarks/load_server.py --compare-workers 1,2 --max-seconds 30
                                                      # 1 then 2 workers, one result file

`corl-graph serve` runs as a subprocess on 127.0.0.1 with replayed experts (a generated table,
so the experts answer instantly and the server, the graph and the ledger are what is measured)
and a SQLite ledger file. Clients (httpx, async) send chat completions from several tenants at
once; the run stops after ``--requests`` requests or ``--max-seconds``, whichever comes first.
Afterwards the server is stopped and its ledger file is opened: per tenant, the settled spend
must equal the sum of the ``corl.cost_usd`` of the responses, no reservation may be open, and
the audit trail must close every reservation exactly once. Loopback only, bounded, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from corl_graph.budget import SQLiteLedger

TENANTS = ("acme", "beta", "gamma", "delta")
MODELS = {"small": (0.15, 0.6), "big": (2.5, 10.0)}  # USD per million tokens, in / out


def key_of(tenant: str) -> str:
    return f"sk-load-{tenant}-0123456789"


def write_config(folder: Path, port: int, *, queries: int = 64) -> Path:
    """A server config with two replayed experts over a generated table and a SQLite ledger."""
    with (folder / "load.jsonl").open("w") as fh:
        for i in range(queries):
            for model, (p_in, p_out) in MODELS.items():
                n_in, n_out = 20 + i % 7, 5 + i % 11
                correct = 1.0 if model == "big" or i % 3 else 0.0
                fh.write(
                    json.dumps(
                        {
                            "query_id": f"q{i}",
                            "split": "test",
                            "prompt": prompt_of(i),
                            "model": model,
                            "correct": correct,
                            "answer": str(2 * i if correct else i),
                            "response": f"It is {2 * i if correct else i}.",
                            "input_tokens": n_in,
                            "output_tokens": n_out,
                            "cost_usd": (n_in * p_in + n_out * p_out) / 1e6,
                        }
                    )
                    + "\n"
                )
    prices = {
        m: {"input_usd_per_mtok": p[0], "output_usd_per_mtok": p[1]} for m, p in MODELS.items()
    }
    (folder / "load.models.json").write_text(json.dumps(prices))
    config = {
        "ledger_url": f"sqlite:///{folder / 'ledger.db'}",
        "port": port,
        "shutdown_grace_s": 5,
        "experts": [{"kind": "replay", "table": "load.jsonl", "model": m} for m in MODELS],
        "policy": {"kind": "cascade", "experts": list(MODELS)},
        "tenants": [
            {"name": t, "limit_usd": 1000.0, "period": "total", "api_keys": [key_of(t)]}
            for t in TENANTS
        ],
    }
    path = folder / "server.json"
    path.write_text(json.dumps(config))
    return path


def prompt_of(i: int) -> str:
    return f"What is {i} + {i}?"


def start_server(config: Path, log: Path, *, workers: int = 1) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-c",
        "import sys; from corl_graph.cli import main; sys.exit(main())",
        "serve",
        "--config",
        str(config),
        *(["--workers", str(workers)] if workers != 1 else []),
    ]
    with log.open("ab") as out:
        # its own session, so that a test can end the workers too if the parent is killed
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become healthy in time")


def stop_server(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # any worker left behind by a killed parent


@dataclass
class LoadResult:
    """What the clients saw: latencies of successes, costs per tenant, error counts."""

    latencies: list[float] = field(default_factory=list)
    cost_by_tenant: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies)


async def run_load(
    url: str,
    *,
    requests: int,
    concurrency: int,
    max_seconds: float,
    stop_after: int | None = None,
    queries: int = 64,
    result: LoadResult | None = None,
) -> LoadResult:
    """Send up to ``requests`` chat completions with ``concurrency`` workers; stop early after
    ``max_seconds`` or once ``stop_after`` successes arrived. ``result`` may be passed in to
    watch progress from another task (the crash test kills the server half way)."""
    result = result or LoadResult()
    result.cost_by_tenant = {t: [] for t in TENANTS}
    counter = iter(range(requests))
    started = time.perf_counter()
    deadline = started + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() > deadline or (stop_after and result.ok >= stop_after):
                    return
                await _one(client, i, result, queries)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


async def _one(client: httpx.AsyncClient, i: int, result: LoadResult, queries: int) -> None:
    tenant = TENANTS[i % len(TENANTS)]
    body = {
        "model": "corl-medium",
        "messages": [{"role": "user", "content": prompt_of(i % queries)}],
    }
    start = time.perf_counter()
    try:
        response = await client.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key_of(tenant)}"}
        )
    except httpx.HTTPError as exc:
        result.errors[type(exc).__name__] += 1
        return
    if response.status_code != 200:
        result.errors[f"http_{response.status_code}"] += 1
        return
    result.latencies.append(time.perf_counter() - start)
    result.cost_by_tenant[tenant].append(float(response.json()["corl"]["cost_usd"]))


async def audit_ledger(path: Path, *, reconcile_at: float | None = None) -> dict[str, Any]:
    """Per-tenant totals straight from the ledger file, and whether every reservation closed."""
    ledger = SQLiteLedger(path)
    try:
        if reconcile_at is not None:
            await ledger.reconcile(now=reconcile_at)
        tenants = {}
        for t in TENANTS:
            spend = await ledger.tenant_spend(t)
            tenants[t] = {
                "settled": spend.settled_usd,
                "held": spend.held_usd,
                "expired": spend.expired_usd,
            }
        audit = await ledger.audit()
    finally:
        await ledger.aclose()
    reserved = Counter(e.reservation_id for e in audit if e.event == "reserved")
    closed = Counter(
        e.reservation_id for e in audit if e.event in ("settled", "released", "expired")
    )
    settled_lines = Counter(e.reservation_id for e in audit if e.event == "settled")
    return {
        "tenants": tenants,
        "reservations": len(reserved),
        "expired_lines": sum(1 for e in audit if e.event == "expired"),
        "unclosed": sorted(set(reserved) - set(closed)),
        "closed_twice": sorted(r for r, n in closed.items() if n > 1 and settled_lines[r] != 1),
        "settled_twice": sorted(r for r, n in settled_lines.items() if n > 1),
        "audit_settled_usd": math.fsum(e.amount_usd for e in audit if e.event == "settled"),
    }


def compare(load: LoadResult, books: dict[str, Any]) -> dict[str, Any]:
    """Per tenant: ledger settled spend minus the sum of the response costs (0 when exact)."""
    diffs = {t: books["tenants"][t]["settled"] - math.fsum(load.cost_by_tenant[t]) for t in TENANTS}
    client_total = math.fsum(math.fsum(c) for c in load.cost_by_tenant.values())
    return {
        "client_total_usd": client_total,
        "ledger_settled_usd": math.fsum(b["settled"] for b in books["tenants"].values()),
        "max_abs_diff_usd": max(abs(d) for d in diffs.values()),
        "equal": all(abs(d) <= 1e-9 for d in diffs.values())
        and not books["unclosed"]
        and not books["settled_twice"],
    }


def summary(load: LoadResult) -> dict[str, Any]:
    lat = sorted(load.latencies)

    def pct(p: float) -> float:
        return 1000 * lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {
        "requests_ok": load.ok,
        "errors": dict(load.errors),
        "seconds": load.seconds,
        "throughput_rps": load.ok / load.seconds if load.seconds else 0.0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": 1000 * statistics.fmean(lat) if lat else float("nan"),
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """One bounded run against ``corl-graph serve --workers workers`` on a fresh ledger file."""
    with tempfile.TemporaryDirectory(prefix="corl-load-") as tmp:
        folder, port = Path(tmp), free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(write_config(folder, port), folder / "server.log", workers=workers)
        try:
            wait_healthy(url, proc)
            load = asyncio.run(
                run_load(
                    url,
                    requests=args.requests,
                    concurrency=args.concurrency,
                    max_seconds=args.max_seconds,
                )
            )
        finally:
            stop_server(proc)
        books = asyncio.run(audit_ledger(folder / "ledger.db"))
    return {
        "workers": workers,
        **summary(load),
        "ledger": compare(load, books),
        "reservations": books["reservations"],
        "load_avg_at_end": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N")
    parser.add_argument(
        "--compare-workers",
        help="comma-separated worker counts run back to back (e.g. 1,2); the top-level "
        "figures are the first count's, each count's own under by_workers",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "load_server.json"
    )
    args = parser.parse_args(argv)
    counts = (
        [int(n) for n in args.compare_workers.split(",")]
        if args.compare_workers
        else [args.workers]
    )
    load_before = os.getloadavg()[0]
    runs = [measure(args, n) for n in counts]
    first = runs[0]
    report: dict[str, Any] = {
        "command": "python benchmarks/load_server.py " + " ".join(argv or sys.argv[1:]),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_seconds": args.max_seconds,
        **{k: v for k, v in first.items() if k not in ("load_avg_at_end",)},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_start": load_before,
            "load_avg_at_end": os.getloadavg()[0],
        },
    }
    if len(runs) > 1:
        report["by_workers"] = {str(r["workers"]): r for r in runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = all(r["ledger"]["equal"] and not r["errors"] for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
