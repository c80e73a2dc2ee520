"""OpenTelemetry spans and metrics with GenAI conventions plus cost, for any OTLP backend."""

from corl_graph.tracing._export import configure_tracing, langfuse, phoenix
from corl_graph.tracing._metrics import RouterMetrics
from corl_graph.tracing._redact import redact
from corl_graph.tracing._report import DEFAULT_SECTIONS, CostReport, ReportRow, summarize
from corl_graph.tracing._tracer import RouterTracer

__all__ = [
    "DEFAULT_SECTIONS",
    "CostReport",
    "ReportRow",
    "RouterMetrics",
    "RouterTracer",
    "configure_tracing",
    "langfuse",
    "phoenix",
    "redact",
    "summarize",
]
