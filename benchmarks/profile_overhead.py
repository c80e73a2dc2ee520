"""Where the untraced router's overhead over the bare LangGraph graph goes, and whose it is.

bench_overhead.py measures the routed query (in-memory ledger, no tracing) against the bare
graph of the same shape. This script splits both into parts, in one process, variants
interleaved in rounds, by the CPU time of this thread (``time.thread_time``: on a shared,
loaded machine it moves far less than wall time) accumulated by timing wrappers around:

- the graph run (``Router._ainvoke`` / the bare graph's ``ainvoke``) and, outside it,
  ``Router.arun``'s own work (query id, span, the typed result): corl_graph;
- each node function of the routed graph (think, call_expert, answer: the vote and the answer,
  ``finish``); the graph
  run minus its node functions is LangGraph's (the Pregel loop, channels, tasks);
- inside call_expert: the chat model's ``ainvoke`` (langchain-core, the same fake model the
  bare graph calls), ``ChatModelExpert.agenerate`` around it, the in-memory ledger's
  ``reserve`` / ``settle``; the rest of the node is corl_graph's call path (budget request,
  ``asyncio.timeout``, answer extraction, records).

A wrapper costs a little itself; ``wrapper_us`` is one wrapped no-op coroutine's cost, and
``wrapped_calls_per_query`` how many a query makes, so the sum can be corrected by hand. Then
a cProfile of both variants, own time per query by package (inflated by the profiler, so
shares only), and its routed-minus-bare difference.

    python benchmarks/profile_overhead.py [--queries 300] [--rounds 6]
        # writes benchmarks/results/overhead_profile.json
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import json
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import bench_overhead
from profile_tracing import _by_package

import corl_graph.graph._factory as factory
import corl_graph.graph._router as router_mod
from corl_graph import TenantBudget
from corl_graph.budget import InMemoryLedger
from corl_graph.experts import ChatModelExpert
from corl_graph.testing import FakeChatModel

RESULTS = Path(__file__).parent / "results" / "overhead_profile.json"
_ACC: dict[str, float] = defaultdict(float)
_CALLS: dict[str, int] = defaultdict(int)
_NODES = ("think_and_route", "call_expert", "finish")


def _wrap(owner: Any, name: str, key: str) -> None:
    orig = getattr(owner, name)

    @functools.wraps(orig)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return await orig(*args, **kwargs)
        finally:
            _ACC[key] += time.thread_time() - start
            _CALLS[key] += 1

    setattr(owner, name, timed)


def _instrument() -> None:
    # The factory binds the node functions when a graph is built: patch before building.
    for node in _NODES:
        _wrap(factory, node, f"node.{node}")
    _wrap(router_mod.Router, "arun", "router.arun")
    _wrap(router_mod.Router, "_ainvoke", "router.graph")
    _wrap(ChatModelExpert, "agenerate", "expert.agenerate")
    _wrap(FakeChatModel, "ainvoke", "model.ainvoke")
    _wrap(InMemoryLedger, "reserve", "ledger.reserve")
    _wrap(InMemoryLedger, "settle", "ledger.settle")


async def _cpu_per_query(fn: Callable[[], Awaitable[Any]], n: int) -> dict[str, float]:
    _ACC.clear()
    _CALLS.clear()
    start = time.thread_time()
    for _ in range(n):
        await fn()
    out = {k: 1e3 * v / n for k, v in _ACC.items()}
    out["total"] = 1e3 * (time.thread_time() - start) / n
    out["wrapped_calls"] = sum(_CALLS.values()) / n
    return out


async def _wrapper_us() -> float:
    class Probe:
        async def noop(self) -> None:
            return None

    _wrap(Probe, "noop", "probe")
    probe, n = Probe(), 20000
    start = time.thread_time()
    for _ in range(n):
        await probe.noop()
    wrapped = time.thread_time() - start

    async def bare() -> None:
        return None

    start = time.thread_time()
    for _ in range(n):
        await bare()
    return 1e6 * (wrapped - (time.thread_time() - start)) / n


def _split(bare: dict[str, float], routed: dict[str, float]) -> dict[str, dict[str, float]]:
    """Both variants' CPU ms per query by owner; the routed split follows the docstring."""
    nodes = sum(routed.get(f"node.{n}", 0.0) for n in _NODES)
    model = routed.get("model.ainvoke", 0.0)
    ledger = routed.get("ledger.reserve", 0.0) + routed.get("ledger.settle", 0.0)
    agenerate = routed.get("expert.agenerate", 0.0)
    call_node = routed.get("node.call_expert", 0.0)
    routed_split = {
        "langgraph (graph run minus node functions)": routed["router.graph"] - nodes,
        "langchain_core (the chat model's ainvoke)": model,
        "corl_graph: Router.arun outside the graph": routed["router.arun"] - routed["router.graph"],
        "corl_graph: think node (policy view, decision, records)": routed["node.think_and_route"],
        "corl_graph: call_expert node minus agenerate and ledger": call_node - agenerate - ledger,
        "corl_graph: in-memory ledger reserve + settle": ledger,
        "corl_graph: ChatModelExpert.agenerate around the model": agenerate - model,
        "corl_graph: answer node (vote, stop reason)": routed["node.finish"],
    }
    bare_split = {
        "langgraph + the benchmark's node functions": bare["total"] - bare["model.ainvoke"],
        "langchain_core (the chat model's ainvoke)": bare["model.ainvoke"],
    }
    return {
        "bare": bare_split,
        "routed": routed_split,
        "routed_minus_bare": {
            "langgraph": routed_split["langgraph (graph run minus node functions)"]
            - bare_split["langgraph + the benchmark's node functions"],
            "langchain_core": model - bare["model.ainvoke"],
            "corl_graph": sum(v for k, v in routed_split.items() if k.startswith("corl_graph")),
        },
    }


async def _profile(fn: Callable[[], Awaitable[Any]], n: int) -> dict[str, float]:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        await fn()
    profiler.disable()
    return _by_package(pstats.Stats(profiler), n)


async def main(queries: int, rounds: int) -> dict[str, Any]:
    wrapper_us = await _wrapper_us()
    _instrument()
    bare = bench_overhead.bare_graph()
    ledger = InMemoryLedger(default_budget=TenantBudget("*", 1e12, "total"))
    routed, _ = bench_overhead.routed(ledger, tracing=False)
    variants = {"bare": bare, "routed": routed}
    for fn in variants.values():  # warm up
        for _ in range(50):
            await fn()
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    for _ in range(rounds):
        for key, fn in variants.items():
            samples[key].append(await _cpu_per_query(fn, queries))
    cpu = {
        key: {m: statistics.median(s[m] for s in rows) for m in rows[0]}
        for key, rows in samples.items()
    }
    prof_bare = await _profile(bare, queries)
    prof_routed = await _profile(routed, queries)
    for r in bench_overhead._ROUTERS:
        await r.aclose()
    return {
        "cpu_ms_per_query": cpu,
        "ratio_cpu_total": cpu["routed"]["total"] / cpu["bare"]["total"],
        "split_cpu_ms_per_query": _split(cpu["bare"], cpu["routed"]),
        "wrapper_us": wrapper_us,
        "profile_ms_per_query": {
            "bare": prof_bare,
            "routed": prof_routed,
            "routed_minus_bare": {
                k: prof_routed.get(k, 0.0) - prof_bare.get(k, 0.0)
                for k in sorted(
                    set(prof_bare) | set(prof_routed), key=lambda k: -prof_routed.get(k, 0.0)
                )
            },
        },
        "rounds": rounds,
        "queries": queries,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    out = asyncio.run(main(args.queries, args.rounds))
    from _machine import machine

    out = {"machine": machine(), "args": vars(args), **out}
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    cpu = out["cpu_ms_per_query"]
    print(
        f"CPU per query: bare {cpu['bare']['total']:.3f} ms, routed {cpu['routed']['total']:.3f}"
        f" ms (x{out['ratio_cpu_total']:.3f}); wrapper {out['wrapper_us']:.2f} us x "
        f"{cpu['routed']['wrapped_calls']:.0f} calls a routed query"
    )
    for part, rows in out["split_cpu_ms_per_query"].items():
        print(part)
        for k, v in rows.items():
            print(f"  {v:7.3f}  {k}")
