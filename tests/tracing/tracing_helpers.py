"""Helpers shared by the tracing tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import FakeListChatModel
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from corl_graph.budget import BudgetTier, TierSet
from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import AlwaysExpert


def fake_expert(
    name: str, reply: str = "The answer is 4.", *, price: float = 1.0
) -> ChatModelExpert:
    """An instant expert; ``price`` dollars per million tokens, in and out."""
    model = FakeListChatModel(responses=[reply] * 50)
    return ChatModelExpert(name, model, PriceSheet(price, price), provider="fake")


def make_router(
    tracer_provider: TracerProvider | None,
    meter_provider: MeterProvider | None = None,
    *,
    experts: Sequence[ChatModelExpert] | None = None,
    max_usd: float = 0.05,
    max_calls: int | None = None,
    **config: Any,
) -> Router:
    pool = list(experts or [fake_expert("small"), fake_expert("big", price=10.0)])
    tiers = TierSet(
        [
            BudgetTier("low", max_usd_per_query=max_usd, max_expert_calls=max_calls),
            BudgetTier("high", max_usd_per_query=1.0),
        ]
    )
    return Router(
        RouterConfig(
            experts=pool,
            policy=AlwaysExpert([e.name for e in pool]),
            tiers=tiers,
            default_tier="low",
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            **config,
        )
    )


def by_name(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[dict[str, Any]]]:
    """Data points by metric name, as plain dicts (attributes, sum, count, value, unit)."""
    data = json.loads(reader.get_metrics_data().to_json())  # type: ignore[union-attr]
    out: dict[str, list[dict[str, Any]]] = {}
    for rm in data["resource_metrics"]:
        for sm in rm["scope_metrics"]:
            for metric in sm["metrics"]:
                points = metric["data"]["data_points"]
                out.setdefault(metric["name"], []).extend(
                    {**p, "unit": metric["unit"]} for p in points
                )
    return out
