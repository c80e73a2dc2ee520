"""Where the tracing overhead of a routed query goes, and whose code spends it.

bench_overhead.py measures routed + tracing against the bare LangGraph graph. This script
explains the traced-minus-untraced part of that, for the same routed graph (in-memory ledger,
AlwaysExpert over two instant fake models, an SDK TracerProvider with a BatchSpanProcessor into
an exporter that drops the spans), in one process, variants interleaved:

1. ``per_query_ms``: CPU time of the process per query (``time.process_time``, the batch
   processor's export thread included; on a shared machine wall time moves by 2x between
   runs, CPU time far less), untraced and traced, sequential, and the difference.
2. ``spans_per_query``: how many spans a query makes (counted by the exporter).
3. ``sdk_floor_ms``: the same number of spans with the same attributes, nested the same way,
   made directly with the OpenTelemetry SDK's ``start_as_current_span`` (no graph, no
   corl_graph code): what the SDK itself costs for that trace, the floor any instrumentation
   with these spans pays.
4. ``profile``: cProfile of both variants, own time per query grouped by the package the
   function lives in (opentelemetry, corl_graph, langgraph, langchain_core, asyncio, other),
   and the traced-minus-untraced difference per package. cProfile inflates every function
   call, so these shares say whose the extra time is, not how long it takes unprofiled.

    python benchmarks/profile_tracing.py [--queries 400] [--rounds 3]
        # writes benchmarks/results/tracing_profile.json
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from corl_graph import ChatModelExpert, PriceSheet, Router, RouterConfig, TenantBudget
from corl_graph.budget import BudgetTier, InMemoryLedger, TierSet
from corl_graph.policies import AlwaysExpert
from corl_graph.testing import FakeChatModel

RESULTS = Path(__file__).parent / "results" / "tracing_profile.json"
_PACKAGES = ("opentelemetry", "corl_graph", "langgraph", "langchain_core", "asyncio", "pydantic")


class _CountingExporter(SpanExporter):
    """Drops spans, counting them and remembering one trace's shape."""

    def __init__(self) -> None:
        self.count = 0
        self.sample: list[tuple[str, int, int]] = []  # (name, kind, n attributes)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.count += len(spans)
        if not self.sample:
            self.sample = [(s.name, s.kind.value, len(s.attributes or {})) for s in spans]
        return SpanExportResult.SUCCESS


def _router(provider: TracerProvider | None) -> Router:
    experts = [
        ChatModelExpert("a", FakeChatModel("It is 4"), PriceSheet(0.1, 0.4), max_output_tokens=64),
        ChatModelExpert(
            "b", FakeChatModel("The answer is 4"), PriceSheet(2.5, 10.0), max_output_tokens=64
        ),
    ]
    return Router(
        RouterConfig(
            experts=experts,
            policy=AlwaysExpert(["a", "b"]),
            tiers=TierSet([BudgetTier("high", 1.0)]),
            default_tier="high",
            ledger=InMemoryLedger(default_budget=TenantBudget("*", 1e9, "total")),
            tracer_provider=provider,
        )
    )


def _provider(exporter: SpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


async def _time(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        await fn()
    return 1e3 * (time.process_time() - start) / n


def _sdk_floor(provider: TracerProvider, shape: list[tuple[str, int, int]], n: int) -> float:
    """The sampled trace's spans made directly with the SDK: the root around the rest, each
    CLIENT span inside a step span, every span with as many attributes as it had."""
    tracer = provider.get_tracer("floor")
    root, rest = shape[-1], shape[:-1]  # the root ends last, so it is exported last

    def attrs(k: int) -> dict[str, Any]:
        return {f"a{i}": i for i in range(k)}

    root_attrs = attrs(root[2])
    rest_attrs = [(name, SpanKind(kind), attrs(k)) for name, kind, k in rest]
    start = time.process_time()
    for _ in range(n):
        with tracer.start_as_current_span(root[0], kind=SpanKind(root[1]), attributes=root_attrs):
            for name, kind, a in rest_attrs:
                with tracer.start_as_current_span(name, kind=kind, attributes=a):
                    pass
    return 1e3 * (time.process_time() - start) / n


def _by_package(stats: pstats.Stats, queries: int) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for (file, _line, _fn), row in stats.stats.items():  # type: ignore[attr-defined]
        tottime = row[2]
        name = next((p for p in _PACKAGES if f"/{p}/" in file or f"{p}." in file), "other")
        if file.startswith("~"):  # builtins: count them where their caller's package is unknown
            name = "builtins"
        out[name] += 1e3 * tottime / queries
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


async def _profile(router: Router, n: int) -> dict[str, float]:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        await router.arun("What is 2 + 2?")
    profiler.disable()
    return _by_package(pstats.Stats(profiler), n)


async def main(queries: int, rounds: int) -> dict[str, Any]:
    exporter = _CountingExporter()
    provider = _provider(exporter)
    untraced, traced = _router(None), _router(provider)
    for r in (untraced, traced):  # warm up
        for _ in range(30):
            await r.arun("What is 2 + 2?")
    provider.force_flush()
    spans_per_query = exporter.count / 30
    shape = list(exporter.sample[: round(spans_per_query)])

    times: dict[str, list[float]] = {"untraced": [], "traced": [], "sdk_floor": []}
    floor_provider = _provider(_CountingExporter())
    for _ in range(rounds):
        times["untraced"].append(await _time(lambda: untraced.arun("What is 2 + 2?"), queries))
        times["traced"].append(await _time(lambda: traced.arun("What is 2 + 2?"), queries))
        provider.force_flush()  # so that no export is left to run into the next variant
        times["sdk_floor"].append(_sdk_floor(floor_provider, shape, queries))
        floor_provider.force_flush()
    per_query = {k: statistics.median(v) for k, v in times.items()}

    prof_u = await _profile(untraced, queries)
    prof_t = await _profile(traced, queries)
    diff = {
        k: prof_t.get(k, 0.0) - prof_u.get(k, 0.0)
        for k in sorted(set(prof_u) | set(prof_t), key=lambda k: -(prof_t.get(k, 0.0)))
    }
    for r in (untraced, traced):
        await r.aclose()
    provider.shutdown()
    floor_provider.shutdown()
    extra = per_query["traced"] - per_query["untraced"]
    return {
        "per_query_ms": {
            "untraced": per_query["untraced"],
            "traced": per_query["traced"],
            "tracing_extra": extra,
        },
        "spans_per_query": spans_per_query,
        "trace_shape": [{"name": n, "kind": k, "attributes": a} for n, k, a in shape],
        "sdk_floor_ms": per_query["sdk_floor"],
        "sdk_floor_share_of_extra": per_query["sdk_floor"] / extra if extra > 0 else None,
        "profile_ms_per_query": {
            "untraced": prof_u,
            "traced": prof_t,
            "traced_minus_untraced": diff,
        },
        "rounds": rounds,
        "queries": queries,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    out = asyncio.run(main(args.queries, args.rounds))
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine

    out = {"machine": machine(), "args": vars(args), **out}
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    pq = out["per_query_ms"]
    print(
        f"per query: untraced {pq['untraced']:.3f} ms, traced {pq['traced']:.3f} ms, "
        f"extra {pq['tracing_extra']:.3f} ms; {out['spans_per_query']:.1f} spans; "
        f"SDK floor for those spans {out['sdk_floor_ms']:.3f} ms"
    )
    print("profile, traced minus untraced, ms/query by package (cProfile-inflated):")
    for k, v in out["profile_ms_per_query"]["traced_minus_untraced"].items():
        print(f"  {k:<16} {v:+.3f}")
