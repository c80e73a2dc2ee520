"""Per-query overhead of tracing: routing with spans (and metrics) on vs off, same process.

Experts are instant fakes (langchain_core FakeListChatModel behind ChatModelExpert), so the
measured time is the router's own work and the difference is what tracing adds. Variants run
interleaved in shuffled order, round after round, so machine load drifts hit all of them alike.

    off      no provider: the global no-op tracer and meter (what a user gets by default)
    traces   SDK TracerProvider + BatchSpanProcessor to an exporter that drops the spans
    full     traces + SDK MeterProvider (InMemoryMetricReader) for the four instruments

    python benchmarks/bench_tracing.py            # writes benchmarks/results/tracing.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from langchain_core.language_models import FakeListChatModel
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import AlwaysExpert

_OUT = Path(__file__).parent / "results" / "tracing.json"


class _DropExporter(SpanExporter):
    """Receives every batch (so the processor does its real work) and drops it."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def _router(tracer: TracerProvider | None, meter: MeterProvider | None) -> Router:
    experts = [
        ChatModelExpert(name, FakeListChatModel(responses=["The answer is 4."]), PriceSheet(p, p))
        for name, p in (("small", 0.1), ("big", 5.0))
    ]
    return Router(
        RouterConfig(
            experts=experts,
            policy=AlwaysExpert(["small", "big"]),
            tracer_provider=tracer,
            meter_provider=meter,
        )
    )


def _routers() -> tuple[dict[str, Router], _DropExporter, list[TracerProvider]]:
    exporter = _DropExporter()
    providers = []
    variants: dict[str, Router] = {"off": _router(None, None)}
    for name, with_metrics in (("traces", False), ("full", True)):
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter))
        providers.append(provider)
        meter = MeterProvider(metric_readers=[InMemoryMetricReader()]) if with_metrics else None
        variants[name] = _router(provider, meter)
    return variants, exporter, providers


async def _measure(rounds: int, per_round: int, warmup: int) -> tuple[dict[str, list[float]], int]:
    variants, exporter, providers = _routers()
    for router in variants.values():
        for _ in range(warmup):
            await router.arun("What is 2+2?", tier="low")
    exporter.spans = 0
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            router = variants[name]
            for _ in range(per_round):
                start = time.perf_counter()
                await router.arun("What is 2+2?", tier="low")
                samples[name].append(time.perf_counter() - start)
    for provider in providers:
        provider.force_flush()
        provider.shutdown()
    traced_queries = len(samples["traces"]) + len(samples["full"])
    return samples, exporter.spans // max(traced_queries, 1)


def _stats(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=100)
    return {
        "p50_ms": q[49] * 1e3,
        "p95_ms": q[94] * 1e3,
        "mean_ms": statistics.fmean(xs) * 1e3,
        "n": len(xs),
    }


def _report(samples: dict[str, list[float]], spans_per_query: int, args: Any) -> dict[str, Any]:
    stats = {name: _stats(xs) for name, xs in samples.items()}
    off = stats["off"]
    overhead = {
        name: {
            "p50_ratio": s["p50_ms"] / off["p50_ms"],
            "p95_ratio": s["p95_ms"] / off["p95_ms"],
            "p50_added_ms": s["p50_ms"] - off["p50_ms"],
        }
        for name, s in stats.items()
        if name != "off"
    }
    return {
        "benchmark": "bench_tracing",
        "what": "per-query latency of Router.arun with 2 instant fake experts (AlwaysExpert)",
        "variants": stats,
        "overhead_vs_off": overhead,
        "spans_per_query": spans_per_query,
        "settings": {
            "rounds": args.rounds,
            "queries_per_round": args.per_round,
            "warmup": args.warmup,
            "interleaved": True,
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "opentelemetry_sdk": version("opentelemetry-sdk"),
            "langgraph": version("langgraph"),
            # Other jobs share the machine; the load says how noisy the run was.
            "load_avg_1m_at_end": os.getloadavg()[0],
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, default=_OUT)
    args = parser.parse_args()
    samples, spans_per_query = asyncio.run(_measure(args.rounds, args.per_round, args.warmup))
    result = _report(samples, spans_per_query, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, s in result["variants"].items():
        print(f"{name:7s} p50 {s['p50_ms']:7.2f} ms  p95 {s['p95_ms']:7.2f} ms  n={s['n']}")
    for name, o in result["overhead_vs_off"].items():
        print(
            f"{name:7s} p50 x{o['p50_ratio']:.3f} (+{o['p50_added_ms']:.2f} ms)  "
            f"p95 x{o['p95_ratio']:.3f}"
        )


if __name__ == "__main__":
    main()
