"""Spans for routed queries, graph steps and expert calls, with tokens and dollars.

    invoke_agent corl_router          (INTERNAL, one per query; AGENT for Phoenix)
    ├── corl.step think               (one per graph step; event corl.decision)
    ├── corl.step call_expert
    │   └── chat gpt-4o-mini          (CLIENT; gen_ai.* usage, gen_ai.usage.cost, llm.cost.total)
    └── corl.step answer

Message contents are recorded only with ``record_content=True``; nothing else that a caller
passes in (keys, headers) is ever put on a span.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from corl_graph.protocol import ExpertCall, StepRecord
from corl_graph.tracing import _attributes as A

__all__ = ["RouterTracer"]

_SCOPE = "corl_graph"


class RouterTracer:
    """Creates corl_graph's spans on ``tracer_provider`` (the global provider by default).

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> t = RouterTracer(TracerProvider())
    >>> with t.query_span("q1", tier="low", tenant="acme", policy="cascade") as span:
    ...     span.is_recording()
    True
    """

    def __init__(
        self, tracer_provider: TracerProvider | None = None, *, record_content: bool = False
    ):
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self.record_content = record_content

    @contextmanager
    def query_span(
        self, query_id: str, *, tier: str, tenant: str, policy: str, query: str | None = None
    ) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            "invoke_agent corl_router",
            kind=SpanKind.INTERNAL,
            attributes={
                A.GEN_AI_OPERATION: "invoke_agent",
                "gen_ai.agent.name": "corl_router",
                A.OPENINFERENCE_KIND: "AGENT",
                A.BUDGET_TIER: tier,
                A.TENANT: tenant,
                "corl.query_id": query_id,
                "corl.policy": policy,
            },
        ) as span:
            if self.record_content and query is not None:
                span.set_attribute("input.value", query)
            yield span

    @contextmanager
    def step_span(self, node: str, step: int) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            f"corl.step {node}",
            attributes={"corl.step.node": node, "corl.step.index": step, A.OPENINFERENCE_KIND: "CHAIN"},
        ) as span:
            yield span

    def record_decision(self, span: Span, step: StepRecord) -> None:
        attributes: dict[str, str | int | bool] = {
            "corl.action": step.action,
            "corl.step.index": step.index,
            "corl.fallback": step.fallback,
        }
        if step.format_error:
            attributes["corl.format_error"] = step.format_error
        if self.record_content and step.detail:
            attributes["corl.action.detail"] = step.detail
        span.add_event("corl.decision", attributes)

    @contextmanager
    def expert_span(
        self,
        *,
        expert: str,
        model: str,
        provider: str,
        max_tokens: int,
        tier: str,
        tenant: str,
        subquery: str,
    ) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            attributes={
                A.GEN_AI_OPERATION: "chat",
                A.GEN_AI_PROVIDER: provider,
                A.GEN_AI_REQUEST_MODEL: model,
                A.GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
                A.OPENINFERENCE_KIND: "LLM",
                "llm.model_name": model,
                "corl.expert": expert,
                A.BUDGET_TIER: tier,
                A.TENANT: tenant,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if self.record_content:
                span.set_attribute("input.value", subquery)
            yield span

    def record_expert_call(
        self, span: Span, call: ExpertCall, *, remaining_usd: float, response_model: str | None
    ) -> None:
        total = call.input_tokens + call.output_tokens
        span.set_attributes(
            {
                A.GEN_AI_INPUT_TOKENS: call.input_tokens,
                A.GEN_AI_OUTPUT_TOKENS: call.output_tokens,
                A.LLM_TOKENS_PROMPT: call.input_tokens,
                A.LLM_TOKENS_COMPLETION: call.output_tokens,
                A.LLM_TOKENS_TOTAL: total,
                A.GEN_AI_COST: call.cost_usd,
                A.LLM_COST_TOTAL: call.cost_usd,
                A.COST_ESTIMATED: call.estimated,
                A.COST_RESERVED: call.reserved_usd,
                A.BUDGET_REMAINING: remaining_usd,
                "corl.call.status": call.status,
                "corl.call.attempts": call.attempts,
            }
        )
        if response_model:
            span.set_attribute(A.GEN_AI_RESPONSE_MODEL, response_model)
        if call.status == "ok":
            span.set_attribute(A.GEN_AI_FINISH_REASONS, ["stop"])
            if self.record_content:
                span.set_attribute("output.value", call.text)
        elif call.status == "truncated":
            span.set_attribute(A.GEN_AI_FINISH_REASONS, ["length"])
        else:
            span.set_attribute(A.GEN_AI_ERROR_TYPE, call.status)
            span.set_status(Status(StatusCode.ERROR, call.error or call.status))

    def record_result(
        self, span: Span, *, cost_usd: float, calls: int, stop_reason: str, remaining_usd: float
    ) -> None:
        span.set_attributes(
            {
                A.GEN_AI_COST: cost_usd,
                A.LLM_COST_TOTAL: cost_usd,
                A.BUDGET_REMAINING: remaining_usd,
                "corl.expert_calls": calls,
                "corl.stop_reason": stop_reason,
            }
        )
