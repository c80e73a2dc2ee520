"""Export presets: argument / OTEL_* precedence, Phoenix and Langfuse settings."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from corl_graph._exceptions import ConfigError
from corl_graph.tracing import _export, configure_tracing, langfuse, phoenix

_OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "LANGFUSE_PUBLIC_KEY",
    "LANGFUSE_SECRET_KEY",
    "LANGFUSE_HOST",
    "PHOENIX_API_KEY",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _OTEL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record what a preset asks of the exporter factory, and export nowhere."""
    seen: dict[str, Any] = {}
    real = _export._exporter

    def fake(protocol: str, endpoint: str | None, headers: dict[str, str] | None) -> SpanExporter:
        seen.update(protocol=protocol, endpoint=endpoint, headers=headers)
        return real(protocol, endpoint, headers)  # type: ignore[arg-type]

    monkeypatch.setattr(_export, "_exporter", fake)
    return seen


def _exporter_of(provider: TracerProvider) -> SpanExporter:
    processor = provider._active_span_processor._span_processors[0]
    return processor.span_exporter  # type: ignore[attr-defined, no-any-return]


def test_defaults_are_http_and_corl_graph() -> None:
    provider = configure_tracing(batch=False, set_global=False)
    assert isinstance(_exporter_of(provider), HttpExporter)
    assert provider.resource.attributes["service.name"] == "corl-graph"
    provider.shutdown()


def test_environment_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4999")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-router")
    provider = configure_tracing(batch=False, set_global=False)
    exporter = _exporter_of(provider)
    assert isinstance(exporter, GrpcExporter)
    assert exporter._endpoint == "127.0.0.1:4999"
    assert provider.resource.attributes["service.name"] == "billing-router"
    provider.shutdown()


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    provider = configure_tracing(
        "http://127.0.0.1:4318",
        "http/protobuf",
        service_name="from-arg",
        batch=False,
        set_global=False,
    )
    exporter = _exporter_of(provider)
    assert isinstance(exporter, HttpExporter)
    assert exporter._endpoint == "http://127.0.0.1:4318/v1/traces"
    assert provider.resource.attributes["service.name"] == "from-arg"
    provider.shutdown()


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://h:4318", "http://h:4318/v1/traces"),
        ("http://h:4318/", "http://h:4318/v1/traces"),
        ("http://h:4318/v1/traces", "http://h:4318/v1/traces"),
        ("https://lf.example/api/public/otel", "https://lf.example/api/public/otel/v1/traces"),
    ],
)
def test_http_endpoint_gets_the_traces_path(given: str, url: str) -> None:
    assert _export._http_traces_url(given) == url


def test_bad_settings_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="http/protobuf"):
        configure_tracing(protocol="http/json", set_global=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scheme"):
        configure_tracing("localhost:4318", set_global=False)
    with pytest.raises(ConfigError, match="key=value"):
        configure_tracing(headers="novalue", set_global=False)


def test_header_string_is_parsed_like_the_env_var() -> None:
    assert _export._headers("Authorization=Basic%20abc, x-tenant = acme") == {
        "authorization": "Basic abc",
        "x-tenant": "acme",
    }


def test_langfuse_uses_its_otel_endpoint_and_basic_auth(captured: dict[str, Any]) -> None:
    provider = langfuse("pk-lf-1", "sk-lf-2", "http://127.0.0.1:3000/", set_global=False)
    assert captured["protocol"] == "http/protobuf"
    assert captured["endpoint"] == "http://127.0.0.1:3000/api/public/otel"
    token = base64.b64encode(b"pk-lf-1:sk-lf-2").decode()
    assert captured["headers"] == {"authorization": f"Basic {token}"}
    provider.shutdown()


def test_langfuse_reads_env_and_needs_keys(
    monkeypatch: pytest.MonkeyPatch, captured: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError, match="LANGFUSE_PUBLIC_KEY"):
        langfuse(set_global=False)
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-env")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-env")
    langfuse(set_global=False).shutdown()
    assert captured["endpoint"] == "https://cloud.langfuse.com/api/public/otel"


def test_phoenix_project_and_api_key(captured: dict[str, Any]) -> None:
    provider = phoenix(project_name="routing", api_key="px-key", set_global=False)
    assert captured["endpoint"] == "http://127.0.0.1:6006"
    assert captured["headers"] == {"authorization": "Bearer px-key"}
    assert provider.resource.attributes["openinference.project.name"] == "routing"
    provider.shutdown()
