"""Orchestration overhead: a routed query against the bare LangGraph graph with the same shape.

Both graphs run think → call → think → call → think → vote → answer with two instant fake
LangChain chat models. The bare graph (the issue's reference) has no ledger, no tracing, a
trivial routing rule on a conditional edge (as LangGraph's docs write it) and the vote and the
answer as two nodes (7 node executions); ``bare_langgraph_command`` is the same graph routing
with ``Command(goto=...)`` from the node; ``bare_langgraph_fused`` routes with ``Command``
and votes in the answer node (6 node executions), as corl_graph's graph does. The routed one
is corl_graph's Router with the AlwaysExpert policy, a ledger (memory, SQLite, PostgreSQL; one
reservation per attempt, ``per_query`` envelopes, or ``leased`` envelopes carved in memory
from $50 budget slices) and tracing off or on (an SDK TracerProvider with a
BatchSpanProcessor into an exporter that drops the spans). ``routed_memory_traced_calls_only``
is the in-memory router traced with ``RouterConfig(trace_steps=False)``: the query span and the
expert calls' CLIENT spans, no span per step. benchmarks/profile_tracing.py says where the
traced-minus-untraced time goes.

Variants are interleaved in rounds in one process (odd rounds in reverse order) so machine
noise hits them alike. Each variant's ratio is taken against the bare graph of the same round,
then the median over rounds, for three measures of time per query: p50 latency, 1 / queries
per second, and the process's CPU time per query (``time.process_time``, all threads, the
batch span processor's export thread included): on a shared machine the steadiest of the
three; at 100 concurrent the p50 latency swings most.

    python benchmarks/bench_overhead.py [--queries 300] [--rounds 3] [--concurrency 100]
        [--only memory,sqlite]   # substrings of variant names (the bare graphs always run)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import operator
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from corl_graph import ChatModelExpert, PriceSheet, Router, RouterConfig, TenantBudget
from corl_graph.budget import BudgetTier, InMemoryLedger, Ledger, TierSet, open_ledger
from corl_graph.policies import AlwaysExpert
from corl_graph.testing import FakeChatModel

RESULTS = Path(__file__).parent / "results" / "overhead.json"
PG_URL = os.environ.get("CORL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


# --- the bare graph -------------------------------------------------------------------------
class Bare(TypedDict, total=False):
    query: str
    replies: Annotated[list[str], operator.add]
    steps: int
    answer: str


def bare_graph(*, command: bool = False, fused: bool = False) -> Any:
    command = command or fused
    models = [FakeChatModel("It is 4"), FakeChatModel("The answer is 4")]
    await_node = "answer" if fused else "aggregate"  # where think goes after the calls

    async def think(state: Bare) -> Any:
        update = {"steps": state.get("steps", 0) + 1}
        if command:
            return Command(update=update, goto=await route(state))
        return update

    async def call(state: Bare) -> dict[str, Any]:
        reply = await models[len(state.get("replies", []))].ainvoke([HumanMessage(state["query"])])
        return {"replies": [str(reply.content)]}

    async def aggregate(state: Bare) -> dict[str, Any]:
        return {"answer": max(set(state["replies"]), key=state["replies"].count)}

    async def answer(state: Bare) -> dict[str, Any]:
        if fused:  # the vote in the answer node
            return {"answer": (await aggregate(state))["answer"]}
        return {"answer": state["answer"]}

    async def route(state: Bare) -> str:  # async: a sync router costs a thread-pool hop
        if len(state.get("replies", [])) < 2:
            return "call"
        return "answer" if fused else "aggregate"

    b = StateGraph(Bare)
    b.add_node("think", think, destinations=("call", await_node) if command else None)
    for name, fn in (
        ("call", call),
        ("answer", answer),
        *(() if fused else (("aggregate", aggregate),)),
    ):
        b.add_node(name, fn)
    b.add_edge(START, "think")
    if not command:
        b.add_conditional_edges("think", route, ["call", "aggregate"])
    b.add_edge("call", "think")
    if not fused:
        b.add_edge("aggregate", "answer")
    b.add_edge("answer", END)
    graph = b.compile()
    return lambda: graph.ainvoke({"query": "What is 2 + 2?"})


# --- the routed graph -----------------------------------------------------------------------
def routed(
    ledger: Ledger, tracing: bool, hold: str = "per_attempt", trace_steps: bool = True
) -> tuple[Callable[[], Awaitable[Any]], TracerProvider | None]:
    experts = [
        ChatModelExpert("a", FakeChatModel("It is 4"), PriceSheet(0.1, 0.4), max_output_tokens=64),
        ChatModelExpert(
            "b", FakeChatModel("The answer is 4"), PriceSheet(2.5, 10.0), max_output_tokens=64
        ),
    ]
    provider = None
    if tracing:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(_DropExporter()))
    config = RouterConfig(
        experts=experts,
        policy=AlwaysExpert(["a", "b"]),
        tiers=TierSet([BudgetTier("high", 1.0)]),
        default_tier="high",
        ledger=ledger,
        tracer_provider=provider,
        **({} if trace_steps else {"trace_steps": False}),
        # Passed only when not the default, so this script also runs against older versions.
        **({"budget_hold": hold} if hold != "per_attempt" else {}),  # type: ignore[arg-type]
        # leased: a slice holds 50 of this tier's $1 envelopes
        **({"budget_lease_usd": 50.0} if hold == "leased" else {}),
    )
    router = Router(config)
    _ROUTERS.append(router)  # closed at the end (leased: settles the open budget slices)
    return (lambda: router.arun("What is 2 + 2?")), provider


_ROUTERS: list[Router] = []
_HOLDS = ("per_query", "leased")  # measured on the durable ledgers


class _DropExporter(SpanExporter):
    """Exports into nothing, so memory stays flat over a long run."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def measure(fn: Callable[[], Awaitable[Any]], n: int, concurrency: int) -> dict[str, float]:
    for _ in range(20):  # warm up
        await fn()
    gc.collect()  # every variant starts from the same heap: no collection left by the last one
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            t = time.perf_counter()
            await fn()
            latencies.append(time.perf_counter() - t)

    cpu = time.process_time()  # all threads: the batch span processor's export thread too
    start = time.perf_counter()
    if concurrency == 1:
        for _ in range(n):
            await one()
    else:
        await asyncio.gather(*(one() for _ in range(n)))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "p50_ms": 1e3 * statistics.median(latencies),
        "p95_ms": 1e3 * latencies[int(0.95 * (len(latencies) - 1))],
        "qps": n / wall,
        "cpu_ms": 1e3 * cpu / n,
    }


# Per round, each variant against the bare graph measured in the same round (the rounds are
# minutes apart on a shared machine; neighbours in time share its load): time per query
# (p50 latency; 1 / queries per second; CPU time of the process per query), then the median
# over rounds. > 1 is slower than the bare graph.
_RATIOS = {
    "ratio_p50_vs_bare": lambda row, bare: row["p50_ms"] / bare["p50_ms"],
    "ratio_qps_vs_bare": lambda row, bare: bare["qps"] / row["qps"],
    "ratio_cpu_vs_bare": lambda row, bare: row["cpu_ms"] / bare["cpu_ms"],
}


async def _ledgers(tmp: str) -> dict[str, Ledger]:
    budget = TenantBudget("*", 1e9, "total")
    out: dict[str, Ledger] = {"memory": InMemoryLedger(default_budget=budget)}
    out["sqlite"] = open_ledger(f"sqlite:///{tmp}/bench.db", default_budget=budget)
    try:
        pg = open_ledger(PG_URL, default_budget=budget)
        await pg.query_spend("probe")
        out["postgres"] = pg
    except Exception as exc:  # the benchmark still runs where no PostgreSQL is reachable
        print(f"postgres skipped: {exc}", file=sys.stderr)
    return out


async def main(
    queries: int, rounds: int, concurrency: int, only: list[str] | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ledgers = await _ledgers(tmp)
        variants: dict[str, Callable[[], Awaitable[Any]]] = {
            "bare_langgraph": bare_graph(),
            "bare_langgraph_command": bare_graph(command=True),
            "bare_langgraph_fused": bare_graph(fused=True),
        }
        providers: list[TracerProvider] = []
        # A variant's batch span processor exports in a thread after the variant's last query;
        # flushed before the next variant starts, so that export does not slow the next one.
        flush: dict[str, TracerProvider] = {}
        # (variant, ledger, traced, hold, trace_steps); per_query and leased only traced (the
        # issue's setting), to fit run_all's budget; trace_steps=False (query + CLIENT spans,
        # 3 instead of 10) on the in-memory ledger only.
        specs: list[tuple[str, Ledger, bool, str, bool]] = []
        for name, ledger in ledgers.items():
            specs += [(f"routed_{name}_untraced", ledger, False, "per_attempt", True)]
            specs += [(f"routed_{name}_traced", ledger, True, "per_attempt", True)]
            if name == "memory":
                specs += [("routed_memory_traced_calls_only", ledger, True, "per_attempt", False)]
            else:
                specs += [(f"routed_{name}_{h}_traced", ledger, True, h, True) for h in _HOLDS]
        for key, ledger, traced, hold, steps in specs:
            if only and not any(o in key for o in only):
                continue
            variants[key], provider = routed(ledger, tracing=traced, hold=hold, trace_steps=steps)
            if provider is not None:
                providers.append(provider)
                flush[key] = provider
        results: dict[str, dict[str, list[float]]] = {}
        names = list(variants)
        for mode, conc in (("sequential", 1), (f"concurrent_{concurrency}", concurrency)):
            for r in range(rounds):
                # odd rounds in reverse order, so no variant always runs first or last
                for name in names if r % 2 == 0 else names[::-1]:
                    m = await measure(variants[name], queries, conc)
                    if name in flush:
                        flush[name].force_flush()
                    for k, v in m.items():
                        results.setdefault(f"{mode}/{name}", {}).setdefault(k, []).append(v)
                bare = {k: v[-1] for k, v in results[f"{mode}/bare_langgraph"].items()}
                for name in names:
                    row = results[f"{mode}/{name}"]
                    this = {k: row[k][-1] for k in ("p50_ms", "qps", "cpu_ms")}
                    for key, ratio in _RATIOS.items():
                        row.setdefault(key, []).append(ratio(this, bare))
        for router in _ROUTERS:
            await router.aclose()
        for ledger in ledgers.values():
            await ledger.aclose()
        for provider in providers:
            provider.shutdown()
    return {k: {m: statistics.median(v) for m, v in d.items()} for k, d in results.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--only", default="", help="comma-separated substrings of variant names")
    parser.add_argument("--no-write", action="store_true", help="print only, keep the results")
    args = parser.parse_args()
    only = [o for o in args.only.split(",") if o]
    summary = asyncio.run(main(args.queries, args.rounds, args.concurrency, only))
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine

    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps({"machine": machine(), "args": vars(args), "results": summary}, indent=2)
            + "\n"
        )
    print(f"{'':<48} {'p50 ms':>8} {'p95 ms':>8} {'q/s':>7} {'CPU ms':>7}  ratio to bare:"
          "  p50  1/q/s  CPU")  # fmt: skip
    for key, row in summary.items():
        print(
            f"{key:<48} {row['p50_ms']:8.2f} {row['p95_ms']:8.2f} {row['qps']:7.1f} "
            f"{row['cpu_ms']:7.2f}  {'':>13}x{row['ratio_p50_vs_bare']:.2f}  "
            f"x{row['ratio_qps_vs_bare']:.2f}  x{row['ratio_cpu_vs_bare']:.2f}"
        )
