"""Spans of routed queries: one trace per query, GenAI attributes, cost, decisions, errors."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.language_models import FakeListChatModel
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tracing_helpers import by_name, fake_expert, make_router

from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.protocol import StepRecord
from corl_graph.tracing import RouterTracer


async def test_one_trace_per_query_with_steps_and_calls_nested(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    router = make_router(tracer_provider)
    results = await asyncio.gather(*(router.arun(f"What is {i}+{i}?") for i in range(3)))
    spans = span_exporter.get_finished_spans()
    assert len({s.context.trace_id for s in spans}) == 3
    for result in results:
        trace = [s for s in spans if format(s.context.trace_id, "032x") == result.trace_id]
        (root,) = [s for s in trace if s.parent is None]
        assert root.name == "invoke_agent corl_router"
        steps = by_name(trace, "corl.step ")
        assert steps and all(s.parent and s.parent.span_id == root.context.span_id for s in steps)
        calls = by_name(trace, "chat ")
        assert len(calls) == len(result.calls) == 2
        step_ids = {s.context.span_id for s in by_name(trace, "corl.step call_expert")}
        assert all(c.parent and c.parent.span_id in step_ids for c in calls)


async def test_without_step_spans_calls_are_children_of_the_query_and_events_stay(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """trace_steps=False: the query span and the CLIENT spans only, the decisions and the
    denied call as events on the query span, the cost still counted once."""
    router = make_router(tracer_provider, max_calls=1, trace_steps=False)
    result = await router.arun("What is 2+2?")
    spans = span_exporter.get_finished_spans()
    (root,) = [s for s in spans if s.parent is None]
    assert not by_name(spans, "corl.step ")
    calls = by_name(spans, "chat ")
    assert len(spans) == 1 + len(calls) and len(calls) == 2  # one made, one denied by max_calls
    assert all(c.parent and c.parent.span_id == root.context.span_id for c in calls)
    events = [e.name for e in root.events]
    assert events.count("corl.decision") == len(result.steps) and "corl.budget.denied" in events
    total = sum(float(s.attributes.get("gen_ai.usage.cost", 0.0)) for s in spans)  # type: ignore[union-attr, arg-type]
    assert total == pytest.approx(result.cost_usd) and result.cost_usd > 0


async def test_client_span_carries_genai_usage_and_cost(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    result = await make_router(tracer_provider).arun("What is 2+2?", tenant="acme")
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    span = spans["chat big"]
    call = next(c for c in result.calls if c.expert == "big")
    attrs = dict(span.attributes or {})
    assert span.kind is SpanKind.CLIENT
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "fake"
    assert attrs["gen_ai.request.model"] == "big"
    assert attrs["gen_ai.usage.input_tokens"] == call.input_tokens > 0
    assert attrs["gen_ai.usage.output_tokens"] == call.output_tokens > 0
    assert attrs["gen_ai.usage.cost"] == attrs["llm.cost.total"] == pytest.approx(call.cost_usd)
    assert attrs["llm.token_count.total"] == call.input_tokens + call.output_tokens
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["openinference.span.kind"] == "LLM"
    assert attrs["corl.budget.tier"] == "low" and attrs["corl.tenant"] == "acme"
    assert attrs["corl.cost.estimated"] is True  # FakeListChatModel reports no usage
    assert 0 < attrs["corl.budget.remaining_usd"] < 0.05


async def test_trace_cost_is_counted_once(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    """Backends sum gen_ai.usage.cost over a trace: only the CLIENT spans may carry it."""
    result = await make_router(tracer_provider).arun("What is 2+2?")
    spans = span_exporter.get_finished_spans()
    total = sum(float(s.attributes.get("gen_ai.usage.cost", 0.0)) for s in spans)  # type: ignore[union-attr, arg-type]
    assert total == pytest.approx(result.cost_usd) and result.cost_usd > 0
    (root,) = by_name(spans, "invoke_agent")
    assert root.attributes["corl.cost.total_usd"] == pytest.approx(result.cost_usd)  # type: ignore[index]
    assert root.attributes["corl.usage.output_tokens"] == result.output_tokens  # type: ignore[index]
    assert root.attributes["corl.stop_reason"] == result.stop_reason  # type: ignore[index]
    assert "llm.cost.total" not in root.attributes  # type: ignore[operator]


async def test_decisions_are_events_with_the_action(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    await make_router(tracer_provider).arun("What is 2+2?")
    events = [
        e
        for s in by_name(span_exporter.get_finished_spans(), "corl.step think")
        for e in s.events
        if e.name == "corl.decision"
    ]
    events.sort(key=lambda e: e.timestamp)
    actions = [(e.attributes or {})["corl.action"] for e in events]
    assert actions == ["call", "call", "aggregate"]
    experts = [(e.attributes or {}).get("corl.expert") for e in events]
    assert {"small", "big"} <= set(experts)
    assert all("corl.action.detail" not in (e.attributes or {}) for e in events)


async def test_denied_call_is_an_event_not_a_failed_client_call(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    result = await make_router(tracer_provider, max_calls=1).arun("What is 2+2?")
    assert [c.status for c in result.calls] == ["ok", "denied"]
    spans = span_exporter.get_finished_spans()
    denied = next(
        s for s in by_name(spans, "chat ") if (s.attributes or {})["corl.call.status"] == "denied"
    )
    assert denied.status.status_code is StatusCode.UNSET  # refused before sending: no failure
    assert "error.type" not in (denied.attributes or {})
    assert denied.attributes["corl.budget.denied"] is True  # type: ignore[index]
    assert denied.attributes["gen_ai.usage.cost"] == 0.0  # type: ignore[index]
    events = [
        e
        for s in by_name(spans, "corl.step call_expert")
        for e in s.events
        if e.name == "corl.budget.denied"
    ]
    assert len(events) == 1 and (events[0].attributes or {})["corl.expert"] == "big"


async def test_tenant_is_user_id_and_session_id_is_set(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    await make_router(tracer_provider).arun("2+2?", tenant="acme", session_id="chat-7")
    (query,) = by_name(span_exporter.get_finished_spans(), "invoke_agent")
    attrs = query.attributes or {}
    assert attrs["user.id"] == "acme" and attrs["session.id"] == "chat-7"


class _Boom(FakeListChatModel):
    async def _agenerate(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise RuntimeError("provider said no (api_key=sk-live-abcdefghijkl)")


async def test_failed_call_records_error_without_the_key(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    broken = ChatModelExpert("broken", _Boom(responses=["x"]), PriceSheet(1, 1), max_retries=0)
    result = await make_router(tracer_provider, experts=[broken, fake_expert("small")]).arun("2+2?")
    assert result.calls[0].status == "failed"
    (span,) = by_name(span_exporter.get_finished_spans(), "chat broken")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "failed"  # type: ignore[index]
    assert "provider said no" in (span.status.description or "")
    assert "sk-live" not in (span.status.description or "")


async def test_content_recorded_only_when_opted_in(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    content_keys = {
        "input.value",
        "output.value",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "corl.action.detail",
    }
    await make_router(tracer_provider).arun("What is 2+2?")
    spans = span_exporter.get_finished_spans()
    seen = {k for s in spans for k in (s.attributes or {})}
    seen |= {k for s in spans for e in s.events for k in (e.attributes or {})}
    assert not seen & content_keys
    span_exporter.clear()
    await make_router(tracer_provider, record_content=True).arun("What is 2+2?")
    spans = span_exporter.get_finished_spans()
    (root,) = by_name(spans, "invoke_agent")
    assert root.attributes["input.value"] == "What is 2+2?"  # type: ignore[index]
    assert root.attributes["output.value"] == "4"  # type: ignore[index]
    chat = by_name(spans, "chat small")[0]
    assert chat.attributes["output.value"] == "The answer is 4."  # type: ignore[index]
    assert '"role": "user"' in chat.attributes["gen_ai.input.messages"]  # type: ignore[index, operator]


def test_escaping_exception_is_recorded_redacted(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    tracer = RouterTracer(tracer_provider)
    with pytest.raises(ValueError), tracer.step_span("think", 0):
        raise ValueError("bad header Authorization: Bearer abcdefghijklmnop")
    (span,) = span_exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    (event,) = span.events
    assert event.name == "exception"
    assert "abcdefghijklmnop" not in str(event.attributes)
    assert "abcdefghijklmnop" not in (span.status.description or "")


def test_decision_format_error_is_redacted(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    tracer = RouterTracer(tracer_provider)
    with tracer.step_span("think", 0) as span:
        record = StepRecord(0, "answer", "", None, "401 for sk-abcdefghijklmnop")
        tracer.record_decision(span, record)
    (event,) = span_exporter.get_finished_spans()[0].events
    assert event.attributes["corl.format_error"] == "401 for [REDACTED]"  # type: ignore[index]


async def test_routing_without_a_provider_records_nothing_and_works() -> None:
    result = await make_router(None).arun("What is 2+2?")
    assert result.answer == "4"


def test_without_any_provider_no_span_is_built_but_a_later_global_one_is_used() -> None:
    from unittest import mock

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider as SDKProvider

    from corl_graph.tracing import RouterTracer

    tracer = RouterTracer()
    no_provider = trace.ProxyTracerProvider()
    with (
        mock.patch.object(trace, "get_tracer_provider", return_value=no_provider),
        tracer.step_span("think", 0) as span,
    ):
        assert span is trace.INVALID_SPAN
    # Once an application installs a real global provider, spans are built again.
    with (
        mock.patch.object(trace, "get_tracer_provider", return_value=SDKProvider()),
        mock.patch.object(tracer._tracer, "start_span") as start,
        tracer.step_span("think", 0),
    ):
        pass
    start.assert_called_once()
