"""Spans and metrics for routed queries, graph steps and expert calls, with tokens and dollars.

    invoke_agent corl_router          (INTERNAL, one per query; AGENT for Phoenix)
    ├── corl.step think               (one per graph step; event corl.decision)
    ├── corl.step call_expert
    │   └── chat gpt-4o-mini          (CLIENT; gen_ai.* usage, gen_ai.usage.cost, llm.cost.total)
    └── corl.step answer

Dollars sit on the CLIENT spans only (``gen_ai.usage.cost`` for Langfuse, ``llm.cost.total``
for Phoenix); the query span carries its totals as ``corl.cost.total_usd`` so that backends
summing cost over a trace do not count it twice.

Message contents are recorded only with ``record_content=True``; free text that could quote a
credential (error messages, exceptions) is scrubbed by ``redact``; nothing else that a caller
passes in (keys, headers, base URLs) is ever put on a span.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType

from opentelemetry import context, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from corl_graph.protocol import ExpertCall, StepRecord
from corl_graph.tracing import _attributes as A
from corl_graph.tracing._metrics import RouterMetrics
from corl_graph.tracing._redact import redact

__all__ = ["RouterTracer"]

_SCOPE = "corl_graph"
# What the global provider is until an application installs a real one.
_NO_OP_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
# Handed out instead of a span when nothing would record it (reusable: it holds no state).
_NO_SPAN: AbstractContextManager[Span] = nullcontext(INVALID_SPAN)


@dataclass(frozen=True, slots=True)
class _CallInfo:
    """What ``record_expert_call`` needs from ``expert_span`` for the metrics."""

    model: str
    provider: str
    tier: str
    tenant: str


# Set inside expert_span. A context variable, not a field, because one tracer serves many
# concurrent queries and, without an SDK provider, every span is the same no-op object.
_current_call: ContextVar[_CallInfo | None] = ContextVar("corl_current_call", default=None)


class _SpanScope:
    """A span started, made current and ended around a ``with`` block: what the SDK's
    ``start_as_current_span`` does, as one plain object instead of two generator context
    managers (it is entered ~10 times a query; the generators cost ~15 us a span here).

    The SDK would record an escaping exception's message verbatim; messages can quote
    credentials, so an exception is recorded here, scrubbed. ``call`` (expert spans) is made
    the current call for ``record_expert_call``'s metrics while the span is open.
    """

    __slots__ = ("_attributes", "_call", "_ctok", "_kind", "_name", "_span", "_token", "_tracer")

    def __init__(
        self,
        tracer: trace.Tracer,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue],
        call: _CallInfo | None = None,
    ):
        self._tracer = tracer
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._call = call

    def __enter__(self) -> Span:
        if self._call is not None:
            self._ctok = _current_call.set(self._call)
        span = self._tracer.start_span(
            self._name,
            kind=self._kind,
            attributes=self._attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = span
        self._token = context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        try:
            if isinstance(exc, Exception) and span.is_recording():
                message = redact(str(exc))
                span.add_event(
                    "exception",
                    {"exception.type": type(exc).__qualname__, "exception.message": message},
                )
                span.set_attribute(A.GEN_AI_ERROR_TYPE, type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR, message))
        finally:
            context.detach(self._token)
            span.end()
            if self._call is not None:
                _current_call.reset(self._ctok)


class _CallScope:
    """No span, but the call's labels current for the metrics (a meter provider without a
    tracer provider)."""

    __slots__ = ("_call", "_token")

    def __init__(self, call: _CallInfo):
        self._call = call

    def __enter__(self) -> Span:
        self._token = _current_call.set(self._call)
        return INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        _current_call.reset(self._token)


class RouterTracer:
    """Creates corl_graph's spans on ``tracer_provider`` and its metrics on ``meter_provider``
    (the global providers by default, which are no-ops until an application configures them).

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> t = RouterTracer(TracerProvider())
    >>> with t.query_span("q1", tier="low", tenant="acme", policy="cascade") as span:
    ...     span.is_recording()
    True
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        record_content: bool = False,
        meter_provider: MeterProvider | None = None,
        step_spans: bool = True,
    ):
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self._explicit = tracer_provider is not None
        self.metrics = RouterMetrics(meter_provider)
        self.record_content = record_content
        self.step_spans = step_spans

    def _off(self) -> bool:
        """No provider anywhere: even a non-recording span costs a context attach/detach,
        about 1 ms over the ~14 spans of a query (measured), for nothing. Checked per span,
        before its attributes are built: an application may install a provider later."""
        return not self._explicit and isinstance(trace.get_tracer_provider(), _NO_OP_PROVIDERS)

    def query_span(
        self,
        query_id: str,
        *,
        tier: str,
        tenant: str,
        policy: str,
        query: str | None = None,
        session_id: str | None = None,
    ) -> AbstractContextManager[Span]:
        """One span per routed query; every step and call of the query is inside it. The
        tenant is also ``user.id`` and a caller's session ``session.id`` (the OpenTelemetry
        and OpenInference names that Phoenix and Langfuse group traces by)."""
        if self._off():
            return _NO_SPAN
        attributes: dict[str, AttributeValue] = {
            A.GEN_AI_OPERATION: "invoke_agent",
            "gen_ai.agent.name": "corl_router",
            A.OPENINFERENCE_KIND: "AGENT",
            A.BUDGET_TIER: tier,
            A.TENANT: tenant,
            "user.id": tenant,
            "corl.query_id": query_id,
            "corl.policy": policy,
        }
        if session_id:
            attributes["session.id"] = session_id
        if self.record_content and query is not None:
            attributes.update(_input_attributes(query))
        return _SpanScope(self._tracer, "invoke_agent corl_router", SpanKind.INTERNAL, attributes)

    def step_span(self, node: str, step: int) -> AbstractContextManager[Span]:
        """One span per graph step (node execution). With ``step_spans=False`` there is none:
        the step's events (``corl.decision``, ``corl.budget.denied``) go on the span that is
        current, the query span, and expert calls are its direct children."""
        if not self.step_spans:
            return nullcontext(trace.get_current_span())
        if self._off():
            return _NO_SPAN
        return _SpanScope(self._tracer, f"corl.step {node}", SpanKind.INTERNAL, {
            "corl.step.node": node, "corl.step.index": step, A.OPENINFERENCE_KIND: "CHAIN",
        })  # fmt: skip

    def record_decision(self, span: Span, step: StepRecord, *, expert: str | None = None) -> None:
        """The controller's decision as a ``corl.decision`` event on the step span."""
        if not span.is_recording():
            return  # nothing would keep the event: skip building it
        attributes: dict[str, AttributeValue] = {
            "corl.action": step.action,
            "corl.step.index": step.index,
            "corl.fallback": step.fallback,
        }
        if expert is not None:
            attributes[A.EXPERT] = expert
        if step.format_error:
            attributes["corl.format_error"] = redact(step.format_error)
        if self.record_content and step.detail:
            attributes["corl.action.detail"] = step.detail
        span.add_event("corl.decision", attributes)

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
    ) -> AbstractContextManager[Span]:
        """The CLIENT span of one expert call (all its attempts), named ``chat {model}``."""
        off = self._off()
        if off and not self.metrics.enabled:
            return _NO_SPAN  # neither a span nor metrics would record the call
        call = _CallInfo(model, provider, tier, tenant)
        if off:  # metrics only: the call's labels without a span
            return _CallScope(call)
        attributes: dict[str, AttributeValue] = {
            A.GEN_AI_OPERATION: "chat",
            A.GEN_AI_PROVIDER: provider,
            A.GEN_AI_REQUEST_MODEL: model,
            A.GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
            A.OPENINFERENCE_KIND: "LLM",
            "llm.model_name": model,
            "llm.provider": provider,
            A.EXPERT: expert,
            A.BUDGET_TIER: tier,
            A.TENANT: tenant,
        }
        if self.record_content:
            attributes.update(_input_attributes(subquery))
        return _SpanScope(self._tracer, f"chat {model}", SpanKind.CLIENT, attributes, call)

    def record_expert_call(
        self,
        span: Span,
        call: ExpertCall,
        *,
        remaining_usd: float,
        response_model: str | None,
        finish_reason: str | None = None,
    ) -> None:
        """Usage, dollars and outcome of a call, on its span and in the metrics."""
        info = _current_call.get()
        if info is not None:
            self.metrics.record_call(
                call,
                model=info.model,
                provider=info.provider,
                response_model=response_model,
                tier=info.tier,
                tenant=info.tenant,
            )
        if not span.is_recording():
            return
        attributes = _usage_attributes(call, remaining_usd)  # one write: the SDK locks per call
        if response_model:
            attributes[A.GEN_AI_RESPONSE_MODEL] = response_model
        if call.status in ("ok", "truncated"):
            default = "stop" if call.status == "ok" else "length"
            attributes[A.GEN_AI_FINISH_REASONS] = [finish_reason or default]
            if self.record_content:
                attributes.update(_output_attributes(call.text, finish_reason or default))
        elif call.status == "denied":
            # Refused by the budget before anything was sent: not a failed client call. The
            # span says so (corl.budget.denied, status unset) and the step span has the event.
            attributes["corl.budget.denied"] = True
        else:
            # error.type is a low-cardinality class of failure, the message goes in the status.
            attributes[A.GEN_AI_ERROR_TYPE] = call.status
            span.set_status(Status(StatusCode.ERROR, redact(call.error or call.status)))
        span.set_attributes(attributes)

    def record_denied(self, span: Span, call: ExpertCall) -> None:
        """A call the budget refused, as a ``corl.budget.denied`` event on the step span."""
        if not span.is_recording():
            return
        span.add_event("corl.budget.denied", {
            A.EXPERT: call.expert, "corl.reason": redact(call.error or "budget exhausted"),
        })  # fmt: skip

    def record_result(
        self,
        span: Span,
        *,
        cost_usd: float,
        calls: int,
        stop_reason: str,
        remaining_usd: float,
        input_tokens: int = 0,
        output_tokens: int = 0,
        answer: str | None = None,
    ) -> None:
        """Totals of a finished query, on its query span."""
        if not span.is_recording():
            return
        attributes: dict[str, AttributeValue] = {
            A.COST_TOTAL: cost_usd,
            A.USAGE_INPUT_TOTAL: input_tokens,
            A.USAGE_OUTPUT_TOTAL: output_tokens,
            A.BUDGET_REMAINING: remaining_usd,
            "corl.expert_calls": calls,
            "corl.stop_reason": stop_reason,
        }
        if self.record_content and answer is not None:
            attributes.update(_output_attributes(answer, "stop"))
        span.set_attributes(attributes)


def _usage_attributes(call: ExpertCall, remaining_usd: float) -> dict[str, AttributeValue]:
    return {
        A.GEN_AI_INPUT_TOKENS: call.input_tokens,
        A.GEN_AI_OUTPUT_TOKENS: call.output_tokens,
        A.LLM_TOKENS_PROMPT: call.input_tokens,
        A.LLM_TOKENS_COMPLETION: call.output_tokens,
        A.LLM_TOKENS_TOTAL: call.input_tokens + call.output_tokens,
        A.GEN_AI_COST: call.cost_usd,
        A.LLM_COST_TOTAL: call.cost_usd,
        A.COST_ESTIMATED: call.estimated,
        A.COST_RESERVED: call.reserved_usd,
        A.BUDGET_REMAINING: remaining_usd,
        A.CALL_STATUS: call.status,
        A.CALL_ATTEMPTS: call.attempts,
    }


def _input_attributes(text: str) -> dict[str, AttributeValue]:
    """Opt-in content in both vocabularies: OpenInference for Phoenix, GenAI for the rest."""
    return {
        "input.value": text,
        "input.mime_type": "text/plain",
        A.GEN_AI_INPUT_MESSAGES: json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": text}]}]
        ),
    }


def _output_attributes(text: str, finish_reason: str) -> dict[str, AttributeValue]:
    return {
        "output.value": text,
        "output.mime_type": "text/plain",
        A.GEN_AI_OUTPUT_MESSAGES: json.dumps(
            [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": text}],
                    "finish_reason": finish_reason,
                }
            ]
        ),
    }
