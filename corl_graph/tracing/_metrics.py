"""Metric instruments: GenAI client token usage and duration, plus dollars by tier/expert/tenant.

    gen_ai.client.token.usage        histogram {token}  gen_ai.token.type = input | output
    gen_ai.client.operation.duration histogram s        error.type when the call failed
    corl.cost                        counter   USD      what the ledger was charged
    corl.expert.calls                counter   {call}   corl.call.status (denied = cap hit)

Every instrument carries ``corl.budget.tier``, ``corl.expert`` and ``corl.tenant`` so a
dashboard can split spend the way the budget is split. Tenants are a bounded set chosen by the
operator (not end users), which keeps the attribute cardinality sane.
"""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider

from corl_graph.protocol import ExpertCall
from corl_graph.tracing import _attributes as A

__all__ = ["RouterMetrics"]

# The SDK exports no public name for the proxy the global provider is until an application
# sets one; it is matched by class name so that a private import is not needed.
_PROXY_METER_PROVIDER = "_ProxyMeterProvider"

_SCOPE = "corl_graph"

# Bucket boundaries advised by the GenAI semantic conventions for these two histograms.
_TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)

# A call with one of these statuses reached the provider and has a duration worth recording.
_REACHED = ("ok", "truncated", "failed", "timeout")


class RouterMetrics:
    """The router's instruments on ``meter_provider`` (the global provider by default).

    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> m = RouterMetrics(MeterProvider())
    >>> from corl_graph.protocol import ExpertCall
    >>> m.record_call(ExpertCall("small", "2+2?", "ok", input_tokens=5, output_tokens=1),
    ...               model="m", provider="openai", response_model=None, tier="low", tenant="t")
    """

    def __init__(self, meter_provider: MeterProvider | None = None):
        self._explicit = meter_provider is not None
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self._tokens = meter.create_histogram(
            A.METRIC_TOKEN_USAGE,
            unit="{token}",
            description="Tokens used per expert call",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            A.METRIC_DURATION,
            unit="s",
            description="Duration of expert calls",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._cost = meter.create_counter(
            A.METRIC_COST, unit="USD", description="Dollars charged by the ledger for expert calls"
        )
        self._calls = meter.create_counter(
            A.METRIC_CALLS, unit="{call}", description="Expert calls by outcome"
        )

    @property
    def enabled(self) -> bool:
        """False while no meter provider is set, neither given nor installed globally (the
        instruments are no-op proxies then). Checked per call: an application may install its
        provider after the router was built, and the proxies then forward to it."""
        if self._explicit:
            return True
        provider = metrics.get_meter_provider()
        return not (
            isinstance(provider, NoOpMeterProvider)
            or type(provider).__name__ == _PROXY_METER_PROVIDER
        )

    def record_call(
        self,
        call: ExpertCall,
        *,
        model: str,
        provider: str,
        response_model: str | None,
        tier: str,
        tenant: str,
    ) -> None:
        """Record one finished (or refused) expert call."""
        if not self.enabled:
            return  # no meter provider anywhere: the attribute sets would be built for nothing
        base: dict[str, str] = {
            A.GEN_AI_OPERATION: "chat",
            A.GEN_AI_PROVIDER: provider,
            A.GEN_AI_REQUEST_MODEL: model,
            A.BUDGET_TIER: tier,
            A.EXPERT: call.expert,
            A.TENANT: tenant,
        }
        if response_model:
            base[A.GEN_AI_RESPONSE_MODEL] = response_model
        self._calls.add(1, {**base, A.CALL_STATUS: call.status})
        if call.cost_usd > 0:
            self._cost.add(call.cost_usd, base)
        if call.status not in _REACHED or call.attempts == 0:
            return  # refused by the ledger: no provider operation happened
        duration_attrs = dict(base)
        if call.status in ("failed", "timeout"):
            duration_attrs[A.GEN_AI_ERROR_TYPE] = call.status
        self._duration.record(call.latency_s, duration_attrs)
        if call.status in ("ok", "truncated"):
            self._tokens.record(call.input_tokens, {**base, A.GEN_AI_TOKEN_TYPE: "input"})
            self._tokens.record(call.output_tokens, {**base, A.GEN_AI_TOKEN_TYPE: "output"})
