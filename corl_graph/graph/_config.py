"""RouterConfig: the one typed configuration of a router, validated when it is built."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from corl_graph._exceptions import ConfigError, UnknownExpertError
from corl_graph.budget import (
    BudgetHold,
    BudgetLeases,
    BudgetTier,
    HoldMode,
    InMemoryLedger,
    LeasedHold,
    Ledger,
    RunHold,
    TenantBudget,
    TierSet,
    default_tiers,
    make_hold,
)
from corl_graph.experts import AnswerExtractor, Expert, extract_answer
from corl_graph.policies import Policy
from corl_graph.protocol import ExpertDescriptor
from corl_graph.tracing import RouterTracer

__all__ = ["RouterConfig", "RouterContext"]

# A tenant limit that no real bill reaches; used by the default in-memory ledger so that
# only the per-query caps of the tiers apply until the user configures tenants.
_NO_TENANT_LIMIT = 1e12


@dataclass(frozen=True, slots=True)
class RouterContext:
    """Per-run settings and state, passed as LangGraph's run context: which tier and tenant to
    charge, and the run's budget hold (``Router.arun`` opens one per run and closes it when the
    run ends; a graph invoked without one holds its calls per attempt on the ledger).

    >>> RouterContext(tier="low", tenant="acme").tier
    'low'
    """

    tier: str | None = None
    tenant: str | None = None
    hold: RunHold | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RouterConfig:
    """Everything a router needs. Invalid values raise ``ConfigError`` naming the fix.

    ``fallback_expert`` is called with the query when the policy's output is unusable and no
    expert has answered yet ("cheapest" = the expert with the lowest output price; None =
    answer nothing instead).

    ``query_timeout_s`` bounds a whole run (None: no deadline). Once it has passed, no new
    expert call starts, a call in flight is cut short (and settled at its reserved amount, as
    any timed-out call), and the run answers with what it has (``stop_reason="deadline"``);
    the controller's own decision is cut short the same way. See docs/reliability.md.

    ``trace_steps`` (default True) gives every graph step its own span. False keeps the query
    span and the expert calls' CLIENT spans (tokens, dollars) and puts the steps' events on
    the query span: 3 spans instead of 10 for a two-call query, for a deployment where the
    tracing overhead matters more than per-step timings (benchmarks/profile_tracing.py).

    ``budget_hold`` says how calls are held in the ledger. ``"per_attempt"`` (default): every
    attempt reserves its worst case and settles its real cost, two ledger operations each.
    ``"per_query"``: the run's first call reserves the tier's whole cap once (an *envelope*),
    attempts are checked against it in memory, and the run settles it once at the end: two
    ledger operations per query, but the tenant sees the whole cap committed while the query
    runs, the audit trail has one line per query, and a run killed mid-way stays charged its
    whole cap until a late settle. ``"leased"``: per-query envelopes as above, carved in
    memory from per-tenant slices of ``budget_lease_usd`` held on the ledger
    (``corl_graph.budget.BudgetLeases``): two ledger operations per slice instead of per
    query, the tenant sees whole slices committed, a dead process leaves at most one slice per
    tenant charged until its lease expires; call ``await router.aclose()`` on shutdown to
    settle the open slices. See docs/budget.md.

    >>> from langchain_core.language_models import FakeListChatModel
    >>> from corl_graph.experts import ChatModelExpert, PriceSheet
    >>> from corl_graph.policies import ControllerOnly
    >>> small = ChatModelExpert("small", FakeListChatModel(responses=["4"]), PriceSheet(0.1, 0.4))
    >>> RouterConfig(experts=[small], policy=ControllerOnly("small")).default_tier
    'medium'
    """

    experts: Sequence[Expert]
    policy: Policy
    tiers: TierSet = field(default_factory=default_tiers)
    ledger: Ledger | None = None
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    record_content: bool = False
    trace_steps: bool = True
    max_steps: int = 8
    default_tier: str = "medium"
    default_tenant: str = "default"
    fallback_expert: str | Literal["cheapest"] | None = "cheapest"
    query_timeout_s: float | None = None
    budget_hold: HoldMode = "per_attempt"
    budget_lease_usd: float = 1.0
    answer_extractor: AnswerExtractor = extract_answer

    def __post_init__(self) -> None:
        experts = list(self.experts)
        if not experts:
            raise ConfigError("RouterConfig.experts is empty: give at least one Expert")
        for e in experts:
            if not isinstance(e, Expert):
                raise ConfigError(
                    f"RouterConfig.experts must hold Expert objects (ChatModelExpert, "
                    f"ReplayExpert…), got {type(e).__name__}"
                )
        names = [e.name for e in experts]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"expert names must be unique, repeated: {dupes}")
        if not isinstance(self.policy, Policy):
            raise ConfigError(
                f"RouterConfig.policy must have a name and an async decide(view), got "
                f"{type(self.policy).__name__}"
            )
        if not isinstance(self.tiers, TierSet):
            raise ConfigError(
                "RouterConfig.tiers must be a TierSet, e.g. TierSet([BudgetTier(...)])"
            )
        self.tiers[self.default_tier]  # raises UnknownTierError naming the configured tiers
        if self.query_timeout_s is not None and not (
            isinstance(self.query_timeout_s, int | float) and self.query_timeout_s > 0
        ):
            raise ConfigError(
                f"query_timeout_s must be a number of seconds > 0 or None, got "
                f"{self.query_timeout_s!r}"
            )
        if self.budget_hold not in ("per_attempt", "per_query", "leased"):
            raise ConfigError(
                f"budget_hold must be 'per_attempt', 'per_query' or 'leased', got "
                f"{self.budget_hold!r}"
            )
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.ledger is not None and not isinstance(self.ledger, Ledger):
            raise ConfigError("RouterConfig.ledger must implement the Ledger protocol")
        if self.budget_hold == "leased" and not (
            isinstance(self.budget_lease_usd, int | float) and self.budget_lease_usd > 0
        ):
            raise ConfigError(
                f"budget_lease_usd must be a number of dollars > 0, got {self.budget_lease_usd!r}"
            )
        _resolve_fallback(self.fallback_expert, {e.name: e for e in experts})  # raises if unknown

    # What the configuration implies, built once on first use (Router builds them when it is
    # constructed, before any concurrent use). Configuration and its dependencies only: what
    # changes per run (the run's budget hold, its deadline) travels with the run, never here.

    @cached_property
    def expert_map(self) -> Mapping[str, Expert]:
        return {e.name: e for e in self.experts}

    @cached_property
    def descriptors(self) -> tuple[ExpertDescriptor, ...]:
        return tuple(e.descriptor for e in self.experts)

    @cached_property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(self.tiers)

    @cached_property
    def _offered(self) -> dict[str, tuple[BudgetTier, tuple[ExpertDescriptor, ...]]]:
        """Per tier name, the tier and the descriptors of the experts it may reach."""
        return {
            name: (tier, tuple(d for d in self.descriptors if tier.allows(d.name)))
            for name, tier in self.tiers.items()
        }

    def offered_to(self, tier: BudgetTier) -> tuple[ExpertDescriptor, ...]:
        """The descriptors of the experts ``tier`` may reach (built once for ``tiers``)."""
        known = self._offered.get(tier.name)
        if known is not None and known[0] is tier:
            return known[1]
        return tuple(d for d in self.descriptors if tier.allows(d.name))

    @cached_property
    def tracer(self) -> RouterTracer:
        return RouterTracer(
            self.tracer_provider,
            record_content=self.record_content,
            meter_provider=self.meter_provider,
            step_spans=self.trace_steps,
        )

    @cached_property
    def resolved_fallback(self) -> str | None:
        return _resolve_fallback(self.fallback_expert, self.expert_map)

    @cached_property
    def hold(self) -> BudgetHold:
        """How this router's runs hold their calls on the ledger (``budget_hold``); the default
        ledger is in memory, with no tenant limit."""
        ledger = self.ledger or InMemoryLedger(
            default_budget=TenantBudget("*", _NO_TENANT_LIMIT, "total")
        )
        return make_hold(
            self.budget_hold,
            ledger,
            envelope_lease_s=_envelope_lease(self.query_timeout_s, self.experts, self.max_steps),
            slice_usd=self.budget_lease_usd,
        )

    @property
    def resolved_ledger(self) -> Ledger:
        """The ledger charged: ``ledger``, or the default in-memory one."""
        return self.hold.ledger

    @property
    def leases(self) -> BudgetLeases | None:
        """With ``budget_hold="leased"``, the router's budget slices."""
        return self.hold.leases if isinstance(self.hold, LeasedHold) else None

    @property
    def holds_per_query(self) -> bool:
        """Runs hold a per-query envelope (``budget_hold`` "per_query" or "leased")."""
        return self.budget_hold != "per_attempt"

    def tier(self, name: str | None) -> BudgetTier:
        return self.tiers[name or self.default_tier]


# How long past a run's expected end its envelope is held before reconcile may expire it.
_ENVELOPE_MARGIN_S = 60.0


def _envelope_lease(timeout_s: float | None, experts: Sequence[Expert], steps: int) -> float:
    """A run's longest expected life: its deadline, else every step calling the slowest
    expert with all its retries. Longer runs are still safe: an expired envelope stays
    charged at the whole cap and the run's final settle replaces it with the real cost."""
    if timeout_s is not None:
        return timeout_s + _ENVELOPE_MARGIN_S
    slowest = max(
        e.timeout_s * (e.max_retries + 1) + e.retry_backoff_s * 2**e.max_retries for e in experts
    )
    return float(steps * slowest + _ENVELOPE_MARGIN_S)


def _resolve_fallback(choice: str | None, experts: Mapping[str, Expert]) -> str | None:
    if choice is None:
        return None
    if choice == "cheapest":
        return min(
            experts.values(),
            key=lambda e: (e.price.cost(1000, e.max_output_tokens), e.name),
        ).name
    if choice not in experts:
        raise UnknownExpertError(
            f"fallback_expert {choice!r} is not an expert; experts: {', '.join(experts)}"
        )
    return choice
