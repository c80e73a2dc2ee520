"""Scaling: how a routed query's cost grows with the size of the expert pool and the number of
expert calls it makes.

Pools of 2, 8 and 32 instant fake experts; the AlwaysExpert policy makes 1, 2, 4 or 8 calls
(capped by the pool size) and votes. In-memory ledger, no tracing: what is measured is the
graph and corl_graph's own bookkeeping. Reports p50 wall latency and CPU time per query
(CPU time is steadier on a shared machine), and per-call increments.

    python benchmarks/bench_scaling.py [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from corl_graph import ChatModelExpert, PriceSheet, Router, RouterConfig, TenantBudget
from corl_graph.budget import BudgetTier, InMemoryLedger, TierSet
from corl_graph.policies import AlwaysExpert
from corl_graph.testing import FakeChatModel

RESULTS = Path(__file__).parent / "results" / "scaling.json"


def _router(pool: int, calls: int) -> Router:
    experts = [
        ChatModelExpert(
            f"e{i}",
            FakeChatModel("The answer is 4"),
            PriceSheet(0.1 + i, 0.4 + i),
            max_output_tokens=64,
            description=f"expert number {i}",
        )
        for i in range(pool)
    ]
    return Router(
        RouterConfig(
            experts=experts,
            policy=AlwaysExpert([f"e{i}" for i in range(calls)]),
            tiers=TierSet([BudgetTier("high", 10.0)]),
            default_tier="high",
            ledger=InMemoryLedger(default_budget=TenantBudget("*", 1e9, "total")),
            max_steps=calls + 2,
        )
    )


async def _measure(router: Router, n: int) -> dict[str, float]:
    for _ in range(10):
        await router.arun("What is 2 + 2?")
    wall: list[float] = []
    cpu0 = time.process_time()
    for _ in range(n):
        t = time.perf_counter()
        await router.arun("What is 2 + 2?")
        wall.append(time.perf_counter() - t)
    return {
        "p50_ms": 1e3 * statistics.median(wall),
        "cpu_ms_per_query": 1e3 * (time.process_time() - cpu0) / n,
    }


async def main(queries: int) -> dict[str, Any]:
    rows = []
    for pool in (2, 8, 32):
        for calls in (1, 2, 4, 8):
            if calls > pool:
                continue
            m = await _measure(_router(pool, calls), queries)
            rows.append({"experts": pool, "calls_per_query": calls, **m})
            print(
                f"experts {pool:>2}  calls {calls}  p50 {m['p50_ms']:6.2f} ms  "
                f"cpu {m['cpu_ms_per_query']:6.2f} ms/query"
            )
    by_pool: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_pool.setdefault(r["experts"], []).append(r)
    per_call = {
        str(pool): (rs[-1]["cpu_ms_per_query"] - rs[0]["cpu_ms_per_query"])
        / (rs[-1]["calls_per_query"] - rs[0]["calls_per_query"])
        for pool, rs in by_pool.items()
        if len(rs) > 1
    }
    return {"rows": rows, "cpu_ms_per_extra_call": per_call}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(main(args.queries))
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"machine": machine(), "args": vars(args), **result}, indent=2) + "\n"
    )
    print(
        "cpu ms per extra call:",
        {k: round(v, 2) for k, v in result["cpu_ms_per_extra_call"].items()},
    )
