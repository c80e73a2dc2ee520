"""Metrics: GenAI token usage and duration histograms, dollars by tier, expert and tenant."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from tracing_helpers import make_router, metric_points


async def test_token_usage_histogram_by_token_type(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    result = await make_router(None, meter_provider).arun("What is 2+2?", tenant="acme")
    points = metric_points(metric_reader)["gen_ai.client.token.usage"]
    assert {p["unit"] for p in points} == {"{token}"}
    by_type = {
        t: sum(p["sum"] for p in points if p["attributes"]["gen_ai.token.type"] == t)
        for t in ("input", "output")
    }
    assert by_type == {"input": result.input_tokens, "output": result.output_tokens}
    assert all(p["count"] == 1 for p in points)  # one record per call and token type
    attrs = points[0]["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "fake"
    assert attrs["corl.tenant"] == "acme" and attrs["corl.budget.tier"] == "low"


async def test_duration_histogram_in_seconds(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    result = await make_router(None, meter_provider).arun("What is 2+2?")
    points = metric_points(metric_reader)["gen_ai.client.operation.duration"]
    assert {p["unit"] for p in points} == {"s"}
    assert sum(p["count"] for p in points) == len(result.calls)
    assert sum(p["sum"] for p in points) == pytest.approx(sum(c.latency_s for c in result.calls))
    assert all("error.type" not in p["attributes"] for p in points)


async def test_cost_counter_by_tier_expert_and_tenant(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    router = make_router(None, meter_provider)
    results = [
        await router.arun("What is 2+2?", tenant=t, tier=tier)
        for t, tier in (("acme", "low"), ("acme", "high"), ("globex", "low"))
    ]
    points = metric_points(metric_reader)["corl.cost"]
    assert {p["unit"] for p in points} == {"USD"}
    spend = {
        (
            p["attributes"]["corl.budget.tier"],
            p["attributes"]["corl.expert"],
            p["attributes"]["corl.tenant"],
        ): p["value"]
        for p in points
    }
    runs = (("acme", "low"), ("acme", "high"), ("globex", "low"))
    assert set(spend) == {(tier, e, t) for t, tier in runs for e in ("small", "big")}
    assert sum(spend.values()) == pytest.approx(sum(r.cost_usd for r in results))
    big = next(c for c in results[0].calls if c.expert == "big")
    assert spend[("low", "big", "acme")] == pytest.approx(big.cost_usd)


async def test_denied_calls_counted_but_not_timed(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    await make_router(None, meter_provider, max_calls=1).arun("What is 2+2?")
    points = metric_points(metric_reader)
    calls = {p["attributes"]["corl.call.status"]: p["value"] for p in points["corl.expert.calls"]}
    assert calls == {"ok": 1, "denied": 1}
    assert sum(p["count"] for p in points["gen_ai.client.operation.duration"]) == 1
    assert {p["attributes"]["corl.expert"] for p in points["corl.cost"]} == {"small"}
