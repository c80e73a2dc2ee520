"""OTLP export presets: any OTLP backend, Arize Phoenix, Langfuse.

    provider = configure_tracing()                      # OTEL_* environment variables
    provider = configure_tracing("http://127.0.0.1:4318")  # Jaeger, Tempo, a collector
    provider = phoenix()                                # local Phoenix on :6006
    provider = langfuse(public_key="pk-lf-…", secret_key="sk-lf-…")

Each returns an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` (export happens on a
background thread, off the request path) and, unless ``set_global=False``, installs it as the
global provider, which is what ``RouterConfig()`` uses when given no ``tracer_provider``.

Precedence: explicit arguments, then the standard ``OTEL_*`` variables, then the defaults. The
exporters live in the ``otlp`` extra (``pip install corl-graph[otlp]``) and are imported only
here, when a preset is called.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from corl_graph._exceptions import ConfigError

__all__ = ["Protocol", "configure_tracing", "langfuse", "phoenix"]

Protocol = Literal["http/protobuf", "grpc"]

_DEFAULT_SERVICE = "corl-graph"
_HTTP_TRACES_PATH = "/v1/traces"
_LANGFUSE_CLOUD = "https://cloud.langfuse.com"


def configure_tracing(
    endpoint: str | None = None,
    protocol: Protocol | None = None,
    headers: Mapping[str, str] | str | None = None,
    service_name: str | None = None,
    *,
    resource_attributes: Mapping[str, str] | None = None,
    batch: bool = True,
    set_global: bool = True,
) -> TracerProvider:
    """A ``TracerProvider`` exporting spans over OTLP.

    ``endpoint`` is the base URL, as in ``OTEL_EXPORTER_OTLP_ENDPOINT``: for HTTP the
    ``/v1/traces`` path is appended (unless already there); for gRPC it is ``host:port`` or
    ``http(s)://host:port`` (``http`` means no TLS). Left out, the exporter reads
    ``OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT`` itself (default ``localhost:4318`` / ``:4317``).
    ``protocol`` defaults to ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL``, then ``http/protobuf``.
    ``headers`` is a mapping or ``"k1=v1,k2=v2"``; left out, ``OTEL_EXPORTER_OTLP_HEADERS``
    applies. ``service_name`` defaults to ``OTEL_SERVICE_NAME``, then ``corl-graph``.

    >>> p = configure_tracing("http://127.0.0.1:4318", set_global=False)
    >>> p.resource.attributes["service.name"]
    'corl-graph'
    >>> p.shutdown()
    """
    chosen = _protocol(protocol)
    exporter = _exporter(chosen, endpoint, _headers(headers))
    attributes: dict[str, str] = dict(resource_attributes or {})
    attributes[SERVICE_NAME] = (
        service_name or os.environ.get("OTEL_SERVICE_NAME") or (_DEFAULT_SERVICE)
    )
    provider = TracerProvider(resource=Resource.create(attributes))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


def phoenix(
    endpoint: str = "http://127.0.0.1:6006",
    *,
    project_name: str | None = None,
    api_key: str | None = None,
    service_name: str | None = None,
    batch: bool = True,
    set_global: bool = True,
) -> TracerProvider:
    """Arize Phoenix (``phoenix serve``, default UI and OTLP/HTTP on port 6006).

    ``project_name`` selects the Phoenix project (default: Phoenix's "default");
    ``api_key`` (or ``PHOENIX_API_KEY``) is sent as a bearer token, for Phoenix Cloud or a
    server with authentication on. Phoenix shows ``llm.cost.total`` and the token counts.

    >>> p = phoenix(project_name="routing", set_global=False)
    >>> p.resource.attributes["openinference.project.name"]
    'routing'
    >>> p.shutdown()
    """
    key = api_key or os.environ.get("PHOENIX_API_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    resource = {"openinference.project.name": project_name} if project_name else None
    return configure_tracing(
        endpoint,
        "http/protobuf",
        headers,
        service_name,
        resource_attributes=resource,
        batch=batch,
        set_global=set_global,
    )


def langfuse(
    public_key: str | None = None,
    secret_key: str | None = None,
    host: str | None = None,
    *,
    service_name: str | None = None,
    batch: bool = True,
    set_global: bool = True,
) -> TracerProvider:
    """Langfuse's OTLP endpoint (``{host}/api/public/otel``, HTTP only, basic auth).

    Arguments left out are read from ``LANGFUSE_PUBLIC_KEY``, ``LANGFUSE_SECRET_KEY`` and
    ``LANGFUSE_HOST`` (default Langfuse Cloud EU). Langfuse reads ``gen_ai.usage.cost``.

    >>> p = langfuse("pk-lf-1", "sk-lf-1", "http://127.0.0.1:3000", set_global=False)
    >>> p.shutdown()
    """
    public = public_key or os.environ.get("LANGFUSE_PUBLIC_KEY")
    secret = secret_key or os.environ.get("LANGFUSE_SECRET_KEY")
    if not public or not secret:
        raise ConfigError(
            "langfuse() needs public_key and secret_key (or LANGFUSE_PUBLIC_KEY and "
            "LANGFUSE_SECRET_KEY); find them in the Langfuse project settings under API keys"
        )
    base = (host or os.environ.get("LANGFUSE_HOST") or _LANGFUSE_CLOUD).rstrip("/")
    token = base64.b64encode(f"{public}:{secret}".encode()).decode()
    return configure_tracing(
        f"{base}/api/public/otel",
        "http/protobuf",
        {"Authorization": f"Basic {token}"},
        service_name,
        batch=batch,
        set_global=set_global,
    )


def _protocol(protocol: str | None) -> Protocol:
    value = (
        protocol
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if value == "http/protobuf":
        return "http/protobuf"
    if value == "grpc":
        return "grpc"
    raise ConfigError(
        f"OTLP protocol {value!r} is not supported; use 'http/protobuf' or 'grpc' "
        "(http/json is not implemented by the Python exporter)"
    )


def _headers(headers: Mapping[str, str] | str | None) -> dict[str, str] | None:
    if headers is None:
        return None  # the exporter then reads OTEL_EXPORTER_OTLP[_TRACES]_HEADERS itself
    if isinstance(headers, str):
        parsed: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in headers.split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"OTLP header {item!r} is not key=value; write 'k1=v1,k2=v2'")
            parsed[unquote(key.strip()).lower()] = unquote(value.strip())
        return parsed
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _exporter(
    protocol: Protocol, endpoint: str | None, headers: dict[str, str] | None
) -> SpanExporter:
    kwargs: dict[str, Any] = {}
    if headers is not None:
        kwargs["headers"] = headers
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            if endpoint is not None:
                # The exporter itself decides TLS: http:// means plaintext, https:// TLS,
                # host:port follows OTEL_EXPORTER_OTLP_INSECURE.
                kwargs["endpoint"] = endpoint
            return GrpcExporter(**kwargs)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )
    except ImportError as exc:
        raise ConfigError(
            f"OTLP export needs the exporter package ({exc.name} is missing): "
            "pip install 'corl-graph[otlp]'"
        ) from exc
    if endpoint is not None:
        kwargs["endpoint"] = _http_traces_url(endpoint)
    return HttpExporter(**kwargs)


def _http_traces_url(endpoint: str) -> str:
    if urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError(f"OTLP/HTTP endpoint {endpoint!r} needs a scheme, e.g. http://{endpoint}")
    base = endpoint.rstrip("/")
    return base if base.endswith(_HTTP_TRACES_PATH) else base + _HTTP_TRACES_PATH
