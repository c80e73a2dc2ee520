"""Shared by the reliability tests: experts over the fake endpoint, and the books check.

The books check is the invariant every fault test ends with: the dollars on the chat spans,
the ledger's settled spend and the sum of ``RouteResult.cost_usd`` are the same number; no
reservation is left open; every reservation was settled or released exactly once (so a retry
never double-charges), and the audit trail's settled lines add up to the settled spend.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from fake_openai import FakeOpenAI
from langchain_openai import ChatOpenAI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from corl_graph.budget import Ledger
from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import RouteResult

PRICE = PriceSheet(1.0, 4.0)  # dollars per million tokens: easy to check by hand
TOL = 1e-12  # dollars; float sums taken in a different order differ by ~1e-18


def tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def chat_model(fake: FakeOpenAI, model: str, *, timeout_s: float = 10.0) -> ChatOpenAI:
    """The real OpenAI client path: no client-side retries, so our retries are the only ones."""
    return ChatOpenAI(
        model=model,
        base_url=fake.base_url,
        api_key=SecretStr("sk-test-key-0000"),
        max_retries=0,
        timeout=timeout_s,
    )


def expert(
    fake: FakeOpenAI, model: str, *, name: str | None = None, **limits: Any
) -> ChatModelExpert:
    limits = {
        "max_output_tokens": 64,
        "max_retries": 0,
        "retry_backoff_s": 0.01,
        "timeout_s": 5.0,
        **limits,
    }
    return ChatModelExpert(name or model, chat_model(fake, model), PRICE, **limits)


async def check_books(
    ledger: Ledger,
    results: Sequence[RouteResult],
    exporter: InMemorySpanExporter,
    *,
    tenant: str = "default",
) -> dict[str, float]:
    """Assert the books agree; return the three totals for the caller's own checks."""
    chat_spans = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    traced = math.fsum(_cost(s.attributes or {}) for s in chat_spans)
    routed = math.fsum(r.cost_usd for r in results)
    spend = await ledger.tenant_spend(tenant)
    assert spend.held_usd == 0.0, f"reservations left open: ${spend.held_usd}"
    assert spend.expired_usd == 0.0, f"reservations expired: ${spend.expired_usd}"
    assert math.isclose(traced, spend.settled_usd, abs_tol=TOL), (traced, spend.settled_usd)
    assert math.isclose(routed, spend.settled_usd, abs_tol=TOL), (routed, spend.settled_usd)
    audit = await ledger.audit(tenant=tenant)
    reserved = Counter(e.reservation_id for e in audit if e.event == "reserved")
    closed = Counter(e.reservation_id for e in audit if e.event in ("settled", "released"))
    assert all(n == 1 for n in reserved.values()), "a reservation id was reserved twice"
    assert closed == reserved, "a reservation was settled twice, or never closed"
    audited = math.fsum(e.amount_usd for e in audit if e.event == "settled")
    assert math.isclose(audited, spend.settled_usd, abs_tol=TOL)
    return {
        "traced": traced,
        "routed": routed,
        "settled": spend.settled_usd,
        "reservations": float(len(reserved)),
    }


def _cost(attributes: Mapping[str, Any]) -> float:
    value = attributes.get("gen_ai.usage.cost", 0.0)
    return float(value) if isinstance(value, int | float) else 0.0
