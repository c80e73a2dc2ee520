"""Router: run a query through the graph with tracing, and get a typed result back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig

from corl_graph._exceptions import ConfigError, QueryTimeoutError, ToolsUnsupportedError
from corl_graph.experts import ChatRequest, ToolCall
from corl_graph.graph._config import RouterConfig, RouterContext
from corl_graph.graph._factory import create_router_graph
from corl_graph.graph._state import RouterInput
from corl_graph.protocol import ExpertCall, StepRecord
from corl_graph.trajectories import Trajectory

__all__ = ["RouteResult", "Router", "TrajectorySink"]

TrajectorySink = Callable[[Trajectory], Awaitable[None]]

# The graph honours query_timeout_s by itself (no call starts after it, calls in flight are cut
# short); the hard stop a little later only catches what cannot be cut short cooperatively,
# such as a ledger operation that hangs.
_HARD_STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class RouteResult:
    """The outcome of one routed query.

    ``budget_exhausted`` is True when the ledger refused a call and the controller had to
    answer with what it had; ``stop_reason`` says how the run ended. ``tool_calls`` are the
    answer's tool calls (``{"name", "args", "id"}``) when the run had tools.
    """

    answer: str | None
    answer_source: str | None
    stop_reason: str
    tier: str
    tenant: str
    query_id: str
    run_id: str
    cost_usd: float
    input_tokens: int
    output_tokens: int
    calls: Sequence[ExpertCall]
    steps: Sequence[StepRecord]
    format_errors: Sequence[str]
    budget_exhausted: bool
    trace_id: str | None
    trajectory: Trajectory = field(repr=False)
    tool_calls: Sequence[ToolCall] = ()

    @property
    def expert_calls(self) -> int:
        """Calls that reached an expert (refused ones did not)."""
        return sum(1 for c in self.calls if c.status != "denied")


class Router:
    """Routes queries with a ``RouterConfig``; async first, with one sync wrapper.

    ``trajectory_sink`` receives every run's ``Trajectory`` (for example a store's append).

    >>> from corl_graph.experts import ChatModelExpert, PriceSheet
    >>> from corl_graph.policies import ControllerOnly
    >>> from corl_graph.testing import FakeChatModel
    >>> small = ChatModelExpert("small", FakeChatModel("It is 4."), PriceSheet(0.1, 0.4))
    >>> router = Router(RouterConfig(experts=[small], policy=ControllerOnly("small")))
    >>> result = router.run("What is 2 + 2?", tier="low")
    >>> result.answer, result.stop_reason, result.expert_calls
    ('4', 'aggregated', 1)
    """

    def __init__(
        self,
        config: RouterConfig,
        *,
        trajectory_sink: TrajectorySink | None = None,
        checkpointer: Any = None,
    ):
        if not isinstance(config, RouterConfig):
            raise ConfigError(f"Router needs a RouterConfig, got {type(config).__name__}")
        self.config = config
        self._hold = config.hold  # built now, before any concurrent run
        self.graph = create_router_graph(config, checkpointer=checkpointer)
        self._sink = trajectory_sink
        self._recursion_limit = 3 * config.max_steps + 10

    async def arun(
        self,
        query: str,
        *,
        tier: str | None = None,
        tenant: str | None = None,
        query_id: str | None = None,
        features: Sequence[float] | None = None,
        chat: ChatRequest | None = None,
        session_id: str | None = None,
    ) -> RouteResult:
        """Route one query. Run failures end up in the result as fallbacks, denied calls and
        format errors; raised are only ``ConfigError`` (bad arguments, unknown tenant;
        ``ToolsUnsupportedError`` when ``chat`` has tools or a JSON format and an expert of
        the pool cannot take them, before anything is spent; ``session_id`` becomes the
        trace's ``session.id``),
        ``LedgerError`` (the ledger could not record a charge: fail closed) and
        ``QueryTimeoutError`` (the run could not be stopped at ``query_timeout_s``)."""
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("query must be a non-empty string")
        if chat is not None:
            _check_tool_support(self.config, chat)
        tier_obj = self.config.tier(tier)
        tenant = tenant or self.config.default_tenant
        qid = query_id or uuid.uuid4().hex
        inputs: RouterInput = {
            "query": query,
            "query_id": qid,
            "features": list(features) if features is not None else None,
        }
        if chat is not None:
            inputs["chat"] = chat
        with self.config.tracer.query_span(
            qid,
            tier=tier_obj.name,
            tenant=tenant,
            policy=self.config.policy.name,
            query=query,
            session_id=session_id,
        ) as span:
            state = await self._invoke(inputs, tier_obj.name, tenant)
            ctx = span.get_span_context()
            trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
            result = _result(state, tier_obj.name, tenant, self.config.policy.name, trace_id)
            self.config.tracer.record_result(
                span,
                cost_usd=result.cost_usd,
                calls=result.expert_calls,
                stop_reason=result.stop_reason,
                remaining_usd=tier_obj.remaining_usd(result.cost_usd),
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                answer=result.answer,
            )
        if self._sink is not None:
            await self._sink(result.trajectory)
        return result

    async def _invoke(self, inputs: RouterInput, tier: str, tenant: str) -> dict[str, Any]:
        """Run the graph with the run's own budget hold in its context; the hold is closed
        here, by the run's owner, whether the run answered (settled at what its calls cost)
        or raised (best effort)."""
        hold = self._hold.for_run()
        context = RouterContext(tier=tier, tenant=tenant, hold=hold)
        try:
            state = await self._ainvoke(inputs, context)
        except BaseException:
            await hold.abort()
            raise
        await hold.close()
        return state

    async def _ainvoke(self, inputs: RouterInput, context: RouterContext) -> dict[str, Any]:
        config: RunnableConfig = {"recursion_limit": self._recursion_limit}
        timeout = self.config.query_timeout_s
        if timeout is None:
            return await self.graph.ainvoke(inputs, context=context, config=config)
        try:
            async with asyncio.timeout(timeout + _HARD_STOP_GRACE_S):
                return await self.graph.ainvoke(inputs, context=context, config=config)
        except TimeoutError as exc:
            raise QueryTimeoutError(
                f"query {inputs['query_id']!r} did not finish within query_timeout_s={timeout}s "
                f"(+{_HARD_STOP_GRACE_S}s grace); calls in flight were settled at their "
                "reserved amount",
                timeout_s=timeout,
            ) from exc

    async def aclose(self) -> None:
        """Settle what the router holds on the ledger beyond single queries: with
        ``budget_hold="leased"``, its open budget slices (``LedgerError`` if the ledger cannot
        settle them now; they stay charged at their whole amount). The ledger itself is the
        caller's to close. Safe to call more than once."""
        await self._hold.aclose()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def run(self, query: str, **kwargs: Any) -> RouteResult:
        """Blocking ``arun`` for scripts and notebooks without a running event loop."""
        return asyncio.run(self.arun(query, **kwargs))


def _check_tool_support(config: RouterConfig, chat: ChatRequest) -> None:
    if not isinstance(chat, ChatRequest):
        raise ConfigError(f"chat must be a ChatRequest, got {type(chat).__name__}")
    if not chat.needs_model_support:
        return
    unable = [e for e in config.experts if not e.supports_tools]
    if unable:
        names = ", ".join(f"{e.name} ({type(e).__name__})" for e in unable)
        raise ToolsUnsupportedError(
            f"tools / a JSON response format need experts that call a model; these cannot "
            f"take them: {names}. Replayed experts have no tool data: route such requests "
            "with a pool of ChatModelExpert"
        )


def _result(
    state: dict[str, Any], tier: str, tenant: str, policy: str, trace_id: str | None
) -> RouteResult:
    calls: list[ExpertCall] = state.get("calls", [])
    cost = sum(c.cost_usd for c in calls)
    trajectory = Trajectory(
        query=state["query"],
        tier=tier,
        tenant=tenant,
        query_id=state["query_id"],
        policy=policy,
        segments=list(state.get("segments", [])),
        steps=list(state.get("steps", [])),
        calls=list(calls),
        answer=state.get("answer"),
        answer_source=state.get("answer_source"),
        stop_reason=state.get("stop_reason"),
        cost_usd=cost,
        format_errors=list(state.get("format_errors", [])),
        trace_id=trace_id,
        metadata={"run_id": state.get("run_id", "")},
    )
    return RouteResult(
        answer=state.get("answer"),
        answer_source=state.get("answer_source"),
        stop_reason=state.get("stop_reason") or "answered",
        tier=tier,
        tenant=tenant,
        query_id=state["query_id"],
        run_id=state.get("run_id", ""),
        cost_usd=cost,
        input_tokens=sum(c.input_tokens for c in calls),
        output_tokens=sum(c.output_tokens for c in calls),
        calls=tuple(calls),
        steps=tuple(state.get("steps", [])),
        format_errors=tuple(state.get("format_errors", [])),
        budget_exhausted=bool(state.get("budget_exhausted", False)),
        trace_id=trace_id,
        trajectory=trajectory,
        tool_calls=tuple(state.get("tool_calls") or ()),
    )
