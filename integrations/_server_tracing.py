"""Tracing for ``corl-graph serve``: the config's ``tracing`` section, or the OTEL_* variables.

    [tracing]                      # any OTLP backend (Jaeger, Tempo, a collector)
    exporter = "otlp"              # or "phoenix", "langfuse", "none"
    endpoint = "http://127.0.0.1:4318"
    # protocol = "grpc"; headers = {"x-key" = "..."}; service_name = "router-eu"
    # project_name = "routing"     # phoenix only

Without a ``tracing`` section the standard variables decide, as the OpenTelemetry SDK's own
auto-configuration does: spans are exported when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, unless ``OTEL_TRACES_EXPORTER=none`` or
``OTEL_SDK_DISABLED=true``; protocol, headers and service name come from their OTEL_*
variables too. The server's provider is its own (not installed globally) and is flushed and
shut down when the server drains.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel, ConfigDict

from corl_graph.tracing import configure_tracing, langfuse, phoenix

__all__ = ["TracingConfig", "server_tracer_provider"]


class TracingConfig(BaseModel):
    """The ``tracing`` section of a server config (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    exporter: Literal["otlp", "phoenix", "langfuse", "none"] = "otlp"
    endpoint: str | None = None
    protocol: Literal["http/protobuf", "grpc"] | None = None
    headers: dict[str, str] | None = None
    service_name: str | None = None
    project_name: str | None = None


def _env_enabled(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def server_tracer_provider(
    config: TracingConfig | None, env: Mapping[str, str] | None = None
) -> TracerProvider | None:
    """The provider the server's router traces to, or None (then spans are not exported)."""
    env = os.environ if env is None else env
    if config is None:
        return configure_tracing(set_global=False) if _env_enabled(env) else None
    if config.exporter == "none":
        return None
    if config.exporter == "phoenix":
        return phoenix(
            config.endpoint or "http://127.0.0.1:6006",
            project_name=config.project_name,
            service_name=config.service_name,
            set_global=False,
        )
    if config.exporter == "langfuse":
        return langfuse(host=config.endpoint, service_name=config.service_name, set_global=False)
    return configure_tracing(
        config.endpoint, config.protocol, config.headers, config.service_name, set_global=False
    )
