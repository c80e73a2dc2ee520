"""The graph's nodes, as module-level async functions testable with a hand-made state.

Each takes the state, LangGraph's ``Runtime[RouterContext]`` (tier and tenant of this run)
and the router's ``RouterConfig`` (bound with ``functools.partial`` by the factory), and
returns a state delta.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from typing import Any, Literal, cast

from langgraph.runtime import Runtime
from langgraph.types import Command

from corl_graph._exceptions import PolicyError
from corl_graph.budget import BudgetTier, RunHold
from corl_graph.experts import ChatRequest, ExpertRequest, normalize_answer
from corl_graph.graph._calls import call_expert_with_budget
from corl_graph.graph._config import RouterConfig, RouterContext
from corl_graph.graph._state import RouterState
from corl_graph.graph._stream import stream_answer
from corl_graph.policies import Decision, PolicyView, Turn
from corl_graph.protocol import (
    Action,
    Aggregate,
    Answer,
    CallExpert,
    ExpertCall,
    StepRecord,
    StopReason,
    Think,
    render_action,
    render_budget_exhausted,
    render_expert_error,
    render_expert_reply,
)
from corl_graph.tracing import redact

__all__ = [
    "aggregate",
    "answer",
    "call_expert",
    "finish",
    "next_node",
    "think",
    "think_and_route",
]

NextNode = Literal["think", "call_expert", "answer"]
_ACTIONS = (Think, CallExpert, Aggregate, Answer)


def _run_settings(
    runtime: Runtime[RouterContext] | None, router: RouterConfig
) -> tuple[BudgetTier, str]:
    ctx = runtime.context if runtime is not None else None
    tier = router.tier(ctx.tier if ctx else None)
    return tier, (ctx.tenant if ctx and ctx.tenant else router.default_tenant)


def _run_hold(runtime: Runtime[RouterContext] | None, router: RouterConfig) -> RunHold:
    """The run's budget hold, from its context; without one (a graph invoked directly, or as
    a subgraph), calls are held per attempt on the ledger: nothing would close an envelope."""
    hold = getattr(runtime.context, "hold", None) if runtime is not None else None
    return hold if hold is not None else router.hold.per_attempt


def _spent(state: RouterState) -> float:
    return sum(c.cost_usd for c in state.get("calls", ()))


def build_view(state: RouterState, tier: BudgetTier, router: RouterConfig) -> PolicyView:
    """What the policy sees at this step."""
    spent = _spent(state)
    features = state.get("features")
    return PolicyView(
        query=state["query"],
        query_id=state.get("query_id", ""),
        tier=tier,
        tier_names=router.tier_names,
        # only the experts the tier may reach: the others are not offered, and a call to one
        # is an unknown expert (a format error), whatever the controller was talked into
        experts=router.offered_to(tier),
        transcript=tuple(state.get("transcript", ())),
        steps=tuple(state.get("steps", ())),
        calls=tuple(state.get("calls", ())),
        spent_usd=spent,
        remaining_usd=tier.remaining_usd(spent),
        step=len(state.get("steps", ())),
        max_steps=router.max_steps,
        budget_exhausted=bool(state.get("budget_exhausted", False)),
        features=tuple(features) if features is not None else None,
    )


async def think(
    state: RouterState, runtime: Runtime[RouterContext], *, router: RouterConfig
) -> dict[str, Any]:
    """Ask the policy for the next action; on unusable output record why and fall back."""
    tier, _ = _run_settings(runtime, router)
    view = build_view(state, tier, router)
    delta: dict[str, Any] = {}
    if "run_id" not in state:
        delta["run_id"] = f"{state.get('query_id') or 'q'}:{uuid.uuid4().hex[:12]}"
    deadline = _deadline(state, router)
    if deadline != state.get("deadline"):
        delta["deadline"] = deadline
    with router.tracer.step_span("think", view.step) as span:
        if deadline is not None and time.time() >= deadline:
            action = fallback_action(view, router, terminal=True)
            record = StepRecord(
                index=view.step,
                action=action.kind,
                detail=_detail(action),
                format_error=f"query deadline of {router.query_timeout_s}s reached",
                fallback=True,
            )
            delta.update(stop_reason="deadline")
            decision = Decision(action)
        elif view.step >= router.max_steps:
            action = fallback_action(view, router, terminal=True)
            record = StepRecord(
                index=view.step,
                action=action.kind,
                detail=_detail(action),
                format_error=f"step limit {router.max_steps} reached",
                fallback=True,
            )
            delta.update(stop_reason="step_limit")
            decision = Decision(action)
        else:
            decision, stop = await _decide(view, router, deadline)
            chosen, error = _validate(decision, view)
            if stop:
                delta["stop_reason"] = stop
            action = chosen or fallback_action(view, router, terminal=stop is not None)
            record = StepRecord(
                index=view.step,
                action=action.kind,
                detail=_detail(action),
                raw=decision.raw,
                format_error=error,
                fallback=chosen is None,
            )
        router.tracer.record_decision(
            span, record, expert=action.expert if isinstance(action, CallExpert) else None
        )
    delta.update(
        pending=action,
        steps=[record],
        transcript=[
            Turn("controller", decision.raw if decision.raw is not None else render_action(action))
        ],
    )
    # An empty list is still a write that LangGraph versions and checkpoints: skip it.
    if decision.segments:
        delta["segments"] = list(decision.segments)
    if record.format_error:
        delta["format_errors"] = [record.format_error]
    return delta


async def think_and_route(
    state: RouterState, runtime: Runtime[RouterContext], *, router: RouterConfig
) -> Command[NextNode]:
    """The graph's ``think`` node: ``think``'s delta, sent on with ``Command(goto=...)``.

    Routing inside the node instead of with a conditional edge saves LangGraph a copy of every
    state channel (the edge reads the state as it will be after the node's writes) and a
    runnable call per step, about 0.1 ms each (docs/performance.md).
    """
    delta = await think(state, runtime, router=router)
    return Command(update=delta, goto=next_node(delta["pending"]))


def _deadline(state: RouterState, router: RouterConfig) -> float | None:
    """The run's deadline (a ``time.time()`` instant), fixed by its first step."""
    if state.get("deadline") is not None:
        return state.get("deadline")
    if router.query_timeout_s is None:
        return None
    return time.time() + router.query_timeout_s


async def _decide(
    view: PolicyView, router: RouterConfig, deadline: float | None = None
) -> tuple[Decision, StopReason | None]:
    try:
        if deadline is None:
            decision = await router.policy.decide(view)
        else:
            decision = await asyncio.wait_for(router.policy.decide(view), deadline - time.time())
    except TimeoutError:
        msg = f"the controller did not decide before the query deadline ({router.query_timeout_s}s)"
        return Decision(None, format_error=msg), "deadline"
    except PolicyError as exc:
        return Decision(None, format_error=redact(str(exc))), "policy_error"
    except Exception as exc:  # a policy bug must not lose the run: record it and fall back
        msg = f"policy {router.policy.name} raised {type(exc).__name__}: {exc}"
        return Decision(None, format_error=redact(msg)), "policy_error"
    if not isinstance(decision, Decision):
        return Decision(
            None, format_error=f"policy returned {type(decision).__name__}, not a Decision"
        ), None
    return decision, None


def _validate(decision: Decision, view: PolicyView) -> tuple[Action | None, str | None]:
    action = decision.action
    if action is None:
        return None, decision.format_error or "policy gave no action"
    if not isinstance(action, _ACTIONS):
        return None, f"unknown action {action!r}"
    if isinstance(action, CallExpert):
        if not any(e.name == action.expert for e in view.experts):
            known = ", ".join(e.name for e in view.experts)
            return None, f"unknown expert {action.expert!r}; known: {known}"
        if view.budget_exhausted:
            return None, "budget exhausted: the controller must answer with what it has"
        if not action.subquery.strip():
            return None, f"empty sub-query for expert {action.expert!r}"
    return action, decision.format_error


def fallback_action(view: PolicyView, router: RouterConfig, *, terminal: bool = False) -> Action:
    """The safe action after unusable output: vote if experts answered, else the last reply,
    else (if allowed and affordable) ask the fallback expert, else answer nothing."""
    if view.answers:
        return Aggregate()
    texts = [c.text for c in view.calls if c.status in ("ok", "truncated") and c.text]
    if texts:
        return Answer(texts[-1])
    fallback = router.resolved_fallback
    tried = {c.expert for c in view.calls}
    if (
        not terminal
        and fallback
        and fallback not in tried
        and not view.budget_exhausted
        and view.tier.allows(fallback)
    ):
        return CallExpert(fallback, view.query)
    return Answer("")


def next_node(action: Action | None) -> NextNode:
    """Where the graph goes after a decision: an ``Aggregate`` goes to the answer node, which
    votes first (``finish``)."""
    if isinstance(action, CallExpert):
        return "call_expert"
    if isinstance(action, Think):
        return "think"
    return "answer"


async def call_expert(
    state: RouterState, runtime: Runtime[RouterContext], *, router: RouterConfig
) -> dict[str, Any]:
    """Run the pending call under the ledger; its outcome becomes an observation."""
    action = state.get("pending")
    if not isinstance(action, CallExpert):  # only reachable by invoking the node by hand
        raise PolicyError(f"call_expert needs a pending CallExpert, got {action!r}")
    tier, tenant = _run_settings(runtime, router)
    step = len(state.get("steps", ()))
    run_id = state.get("run_id") or state.get("query_id") or uuid.uuid4().hex
    spent = _spent(state)
    with router.tracer.step_span("call_expert", step) as step_span:
        call = await call_expert_with_budget(
            router.expert_map[action.expert],
            ExpertRequest(
                state.get("query_id", ""), state["query"], action.subquery, state.get("chat")
            ),
            hold=_run_hold(runtime, router),
            tier=tier,
            tenant=tenant,
            run_id=run_id,
            tracer=router.tracer,
            extract=router.answer_extractor,
            spent_usd=spent,
            deadline=state.get("deadline"),
        )
        if call.status == "denied":
            router.tracer.record_denied(step_span, call)
    remaining = tier.remaining_usd(spent + call.cost_usd)
    delta: dict[str, Any] = {
        "calls": [call],
        "transcript": [Turn("observation", _observe(call, remaining))],
    }
    if call.status == "denied":
        delta["budget_exhausted"] = True
    return delta


def _observe(call: ExpertCall, remaining_usd: float) -> str:
    if call.status == "denied":
        return render_budget_exhausted(remaining_usd)
    if call.status in ("ok", "truncated"):
        if call.tool_calls:  # the controller sees what the expert would call, as JSON
            calls = [{"name": c.get("name"), "args": c.get("args")} for c in call.tool_calls]
            text = f"{call.text}\ntool calls: {json.dumps(calls, default=str)}".strip()
            return render_expert_reply(call.expert, text)
        return render_expert_reply(call.expert, call.text)
    return render_expert_error(call.expert, call.error or call.status)


def _ballot(call: ExpertCall, chat: ChatRequest | None) -> str | None:
    """What a call votes with: its extracted answer normalised, or in a run with tools or a
    JSON format its normalised tool calls / object as it is (corl_graph.experts._tools)."""
    if call.status != "ok" or call.answer is None:
        return None
    if chat is not None and chat.structured:
        if chat.wants_tool_call and not call.tool_calls:
            return None  # tool_choice requires a tool call: a text reply cannot win
        return call.answer
    return normalize_answer(call.answer)


def majority_vote(
    calls: list[ExpertCall], router: RouterConfig, chat: ChatRequest | None = None
) -> str | None:
    """The most common extracted answer; ties go to the answer backed by the priciest expert
    (a proxy for the strongest), then to the earliest."""
    votes = [(b, c) for c in calls if (b := _ballot(c, chat)) is not None]
    if not votes:
        return None
    counts = Counter(a for a, _ in votes)

    def strength(a: str) -> float:
        return max(
            router.expert_map[c.expert].price.output_usd_per_mtok for b, c in votes if b == a
        )

    best = max(counts, key=lambda a: (counts[a], strength(a)))
    return best


async def aggregate(
    state: RouterState, runtime: Runtime[RouterContext], *, router: RouterConfig
) -> dict[str, Any]:
    """Majority vote over the experts' answers; without any, the last reply's text."""
    with router.tracer.step_span("aggregate", len(state.get("steps", ()))):
        calls = list(state.get("calls", ()))
        chat = state.get("chat")
        voted = majority_vote(calls, router, chat)
        if voted is not None and chat is not None and chat.structured:
            # Data, not a final answer to extract: the first reply that cast the winning
            # ballot, text and tool calls as they are.
            won = next(c for c in calls if _ballot(c, chat) == voted)
            return {
                "pending": Answer(won.text),
                "answer_source": "vote",
                "tool_calls": [dict(c) for c in won.tool_calls],
            }
        if voted is not None:
            return {"pending": Answer(voted), "answer_source": "vote"}
        texts = [c for c in calls if c.status in ("ok", "truncated") and c.text]
        if texts:
            return {"pending": Answer(texts[-1].text), "answer_source": texts[-1].expert}
        return {"pending": Answer(""), "answer_source": None}


async def finish(
    state: RouterState, runtime: Runtime[RouterContext], *, router: RouterConfig
) -> dict[str, Any]:
    """The graph's ``answer`` node. After an ``Aggregate`` decision it runs ``aggregate`` and
    then ``answer`` on the voted state, in one LangGraph superstep instead of two (a
    superstep costs LangGraph ~0.2 ms of CPU, docs/performance.md); each keeps its own step
    span, and the state written is what the two nodes wrote one after the other."""
    if not isinstance(state.get("pending"), Aggregate):
        return await answer(state, runtime, router=router)
    voted = await aggregate(state, runtime, router=router)
    done = await answer(cast(RouterState, {**state, **voted}), runtime, router=router)
    return {**voted, **done}


async def answer(
    state: RouterState, runtime: Runtime[RouterContext], *, router: RouterConfig
) -> dict[str, Any]:
    """Finish the run: the final answer and why the run stopped."""
    with router.tracer.step_span("answer", len(state.get("steps", ()))):
        action = state.get("pending")
        text = action.text if isinstance(action, Answer) else ""
        source = state.get("answer_source")
        tool_calls = state.get("tool_calls") or []
        if source is None and text:
            source = "controller"
        stop: StopReason | None = state.get("stop_reason")
        if stop is None:
            if state.get("budget_exhausted"):
                stop = "budget_exhausted"
            else:
                stop = "aggregated" if source == "vote" else "answered"
        await stream_answer(text, tool_calls)  # stream_mode="messages": the answer's tokens
        return {
            "answer": text or None,
            "answer_source": source if text or tool_calls else None,
            "stop_reason": stop,
        }


def _detail(action: Action) -> str:
    if isinstance(action, CallExpert):
        return f"{action.expert}: {action.subquery}"
    if isinstance(action, Answer | Think):
        return action.text
    return ""
