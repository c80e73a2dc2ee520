"""OpenTelemetry spans with GenAI conventions plus cost, for any OTLP backend."""

from corl_graph.tracing._tracer import RouterTracer

__all__ = ["RouterTracer"]
