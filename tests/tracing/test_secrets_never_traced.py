"""A ChatOpenAI expert's API key never reaches a span, an event, a status or a metric."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from langchain_openai import ChatOpenAI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tracing_helpers import make_router

from corl_graph.experts import ChatModelExpert, PriceSheet

SECRET = "sk-secret-4f8a1c9e2b7d6e5f0a3b"
# Fragments a careless mask would still print ("sk-secre****6e5f0a3b").
FRAGMENTS = (SECRET, SECRET[3:], SECRET[-8:])


def _reply(request: httpx.Request) -> httpx.Response:
    """An OpenAI-compatible endpoint that answers, or rejects the key quoting it in full."""
    body = json.loads(request.content)
    prompt = body["messages"][-1]["content"]
    if "reject" in prompt:
        return httpx.Response(
            401,
            json={
                "error": {
                    "message": (
                        f"Incorrect API key provided: {SECRET}. Header was 'Bearer {SECRET}'"
                    ),
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4o-mini-2024",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "The answer is 4."},
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
        },
    )


def _openai_expert() -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini",
        api_key=SECRET,
        base_url="http://openai.invalid/v1",
        max_retries=0,
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(_reply)),
    )


def _everything(spans: tuple[ReadableSpan, ...], reader: InMemoryMetricReader) -> Iterator[str]:
    for span in spans:
        yield span.to_json()  # name, attributes, events, links, status, resource
    yield reader.get_metrics_data().to_json()  # type: ignore[union-attr]


@pytest.mark.parametrize("query", ["What is 2+2?", "please reject me"])
async def test_api_key_never_traced(
    query: str,
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> None:
    expert = ChatModelExpert("gpt", _openai_expert(), PriceSheet(0.15, 0.6), max_retries=0)
    # record_content on: the widest exposure a user can choose.
    router = make_router(tracer_provider, meter_provider, experts=[expert], record_content=True)
    result = await router.arun(query)
    assert result.calls[0].status == ("failed" if "reject" in query else "ok")
    if result.calls[0].status == "ok":
        assert result.calls[0].input_tokens == 11  # the mock endpoint really answered
    dumped = list(_everything(span_exporter.get_finished_spans(), metric_reader))
    assert any("chat gpt-4o-mini" in d for d in dumped)
    for text in dumped:
        for fragment in FRAGMENTS:
            assert fragment not in text


async def test_rejected_key_error_is_kept_but_scrubbed(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    expert = ChatModelExpert("gpt", _openai_expert(), PriceSheet(0.15, 0.6), max_retries=0)
    await make_router(tracer_provider, experts=[expert]).arun("please reject me")
    (span,) = [s for s in span_exporter.get_finished_spans() if s.name.startswith("chat ")]
    description = span.status.description or ""
    assert "Incorrect API key provided: [REDACTED]" in description
    assert span.attributes["error.type"] == "failed"  # type: ignore[index]
