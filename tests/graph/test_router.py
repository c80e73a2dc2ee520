"""The routing graph end to end, with fake chat models as experts."""

import asyncio

import pytest

from corl_graph import (
    BudgetTier,
    ChatModelExpert,
    ConfigError,
    InMemoryLedger,
    PriceSheet,
    Router,
    RouterConfig,
    TenantBudget,
    TierSet,
    UnknownExpertError,
    UnknownTierError,
)
from corl_graph.policies import AlwaysExpert, Cascade, Decision, LLMPolicy, PolicyView
from corl_graph.protocol import Aggregate, Answer, CallExpert, Think
from corl_graph.testing import FakeChatModel, ScriptedPolicy

TIERS = TierSet([BudgetTier("low", 0.0005), BudgetTier("high", 0.05)])


def _experts(**overrides: FakeChatModel) -> list[ChatModelExpert]:
    models = {
        "small": FakeChatModel("I think 5", input_tokens=100, output_tokens=20),
        "mid": FakeChatModel("It is 4", input_tokens=100, output_tokens=20),
        "big": FakeChatModel("The answer is 4", input_tokens=100, output_tokens=20),
    }
    models.update(overrides)
    prices = {
        "small": PriceSheet(0.1, 0.1),
        "mid": PriceSheet(0.5, 1.0),
        "big": PriceSheet(2.5, 10.0),
    }
    return [
        ChatModelExpert(n, m, prices[n], max_output_tokens=200, timeout_s=0.5, retry_backoff_s=0.0)
        for n, m in models.items()
    ]


def _router(policy, **kw) -> Router:  # type: ignore[no-untyped-def]
    experts = kw.pop("experts", None) or _experts()
    return Router(
        RouterConfig(experts=experts, policy=policy, tiers=TIERS, default_tier="high", **kw)
    )


async def test_several_experts_several_calls_with_distinct_subqueries() -> None:
    policy = ScriptedPolicy(
        [
            Think("split it"),
            CallExpert("small", "What is 2 + 2?"),
            CallExpert("mid", "Add two and two."),
            CallExpert("big", "Compute 2+2 exactly."),
            Aggregate(),
        ]
    )
    result = await _router(policy).arun("Solve: two plus two", tier="high")
    assert result.answer == "4" and result.answer_source == "vote"
    assert result.stop_reason == "aggregated"
    assert [c.expert for c in result.calls] == ["small", "mid", "big"]
    assert {c.subquery for c in result.calls} == {
        "What is 2 + 2?",
        "Add two and two.",
        "Compute 2+2 exactly.",
    }
    assert result.input_tokens == 300 and result.output_tokens == 60
    expected = (100 * 0.1 + 20 * 0.1 + 100 * 0.5 + 20 * 1.0 + 100 * 2.5 + 20 * 10.0) / 1e6
    assert result.cost_usd == pytest.approx(expected)
    # The policy saw the remaining budget shrink and the experts' answers accumulate.
    assert policy.views[-1].answers == ["5", "4", "4"]
    assert policy.views[-1].remaining_usd == pytest.approx(0.05 - expected)


async def test_low_tier_denial_becomes_an_observation_and_the_run_still_answers() -> None:
    policy = AlwaysExpert(["small", "big"])
    result = await _router(policy).arun("2+2?", tier="low")
    assert [c.status for c in result.calls] == ["ok", "denied"]
    assert result.budget_exhausted and result.stop_reason == "budget_exhausted"
    assert result.answer == "5"  # what the one affordable expert said
    assert result.cost_usd <= 0.0005


async def test_policy_that_keeps_calling_after_denial_is_forced_to_answer() -> None:
    class Stubborn:
        name = "stubborn"

        def __init__(self) -> None:
            self.views: list[PolicyView] = []

        async def decide(self, view: PolicyView) -> Decision:
            self.views.append(view)
            return Decision(CallExpert("big", view.query))

    stubborn = Stubborn()
    result = await _router(stubborn).arun("2+2?", tier="low")
    assert result.calls[0].status == "denied"
    second = stubborn.views[1]
    assert second.budget_exhausted and second.transcript[-1].text.startswith("<budget-exhausted")
    assert result.steps[1].fallback and "budget exhausted" in (result.steps[1].format_error or "")
    assert result.stop_reason == "budget_exhausted"


async def test_step_limit_ends_a_policy_that_only_thinks() -> None:
    policy = ScriptedPolicy([Think(str(i)) for i in range(100)])
    result = await _router(policy, max_steps=3).arun("q")
    assert result.stop_reason == "step_limit"
    assert len(result.steps) == 4 and result.steps[-1].fallback


@pytest.mark.parametrize(
    "bad",
    [
        Decision(None, raw="<answer>4", format_error="unterminated <answer>"),
        Decision(CallExpert("gpt-9", "x")),
        "not a decision",
    ],
)
async def test_garbage_from_the_policy_is_recorded_and_falls_back(bad: object) -> None:
    policy = ScriptedPolicy([bad])  # type: ignore[list-item]
    result = await _router(policy).arun("What is 2+2?")
    assert result.format_errors, "the malformed output must be recorded"
    assert result.steps[0].fallback
    # Fallback: the cheapest expert with the query, then its answer.
    assert result.calls[0].expert == "small" and result.calls[0].subquery == "What is 2+2?"
    assert result.answer == "5"


async def test_a_policy_that_raises_does_not_lose_the_run() -> None:
    class Broken:
        name = "broken"

        async def decide(self, view: PolicyView) -> Decision:
            raise ZeroDivisionError("bug")

    result = await _router(Broken()).arun("2+2?")
    assert result.stop_reason == "policy_error"
    assert "ZeroDivisionError" in result.format_errors[0]
    assert result.answer is None and result.calls == ()


async def test_hanging_expert_times_out_with_retries_and_is_charged_conservatively() -> None:
    hang = FakeChatModel("4", delay_s=5.0)
    experts = _experts(big=hang)
    experts[2] = ChatModelExpert(
        "big",
        hang,
        PriceSheet(2.5, 10.0),
        max_output_tokens=200,
        timeout_s=0.05,
        max_retries=1,
        retry_backoff_s=0.0,
    )
    ledger = InMemoryLedger(default_budget=TenantBudget("*", 10.0, "total"))
    policy = ScriptedPolicy([CallExpert("big", "2+2?"), CallExpert("mid", "2+2?"), Aggregate()])
    result = await _router(policy, experts=experts, ledger=ledger).arun("2+2?")
    big = result.calls[0]
    assert big.status == "timeout" and big.attempts == 2 and "timed out" in (big.error or "")
    assert big.cost_usd == pytest.approx(big.reserved_usd)  # unknown outcome: charged in full
    assert result.answer == "4"
    spend = await ledger.tenant_spend("default")
    assert spend.settled_usd == pytest.approx(result.cost_usd)
    assert "<expert-error" in [t for t in policy.views[1].transcript][-1].text


async def test_failing_expert_is_retried_then_succeeds_without_double_charge() -> None:
    flaky = FakeChatModel("4", fail_times=2)
    experts = _experts(mid=flaky)
    experts[1] = ChatModelExpert(
        "mid", flaky, PriceSheet(0.5, 1.0), max_retries=2, retry_backoff_s=0.0
    )
    ledger = InMemoryLedger(default_budget=TenantBudget("*", 10.0, "total"))
    result = await _router(
        ScriptedPolicy([CallExpert("mid", "q")]), experts=experts, ledger=ledger
    ).arun("q")
    call = result.calls[0]
    assert call.status == "ok" and call.attempts == 3
    audit = await ledger.audit()
    assert [e.event for e in audit].count("released") == 2
    assert [e.event for e in audit].count("settled") == 1
    assert (await ledger.tenant_spend("default")).settled_usd == pytest.approx(call.cost_usd)


async def test_expert_that_always_fails_gives_a_clear_observation() -> None:
    dead = FakeChatModel("x", fail_times=99, error=ConnectionError("connection refused"))
    experts = _experts(big=dead)
    result = await _router(ScriptedPolicy([CallExpert("big", "q")]), experts=experts).arun("q")
    assert result.calls[0].status == "failed"
    assert "connection refused" in (result.calls[0].error or "")
    assert result.cost_usd == 0.0


async def test_tenant_budget_is_enforced_across_queries() -> None:
    ledger = InMemoryLedger()
    await ledger.set_tenant(TenantBudget("acme", 0.004, "total"))
    router = _router(AlwaysExpert(["big"]), ledger=ledger)
    results = await asyncio.gather(*(router.arun("q", tenant="acme") for _ in range(10)))
    assert sum(r.cost_usd for r in results) <= 0.004
    assert any(r.budget_exhausted for r in results)


async def test_llm_policy_over_a_chat_model_with_malformed_turns() -> None:
    replies = iter(
        ['<think>hmm</think><call expert="big">2+2?</call>', "<answer>4", "<answer>4</answer>"]
    )
    controller = FakeChatModel(lambda _prompt: next(replies))
    result = await _router(LLMPolicy(controller, name="ctl")).arun("2+2?")
    assert result.calls[0].expert == "big"
    assert "unterminated <answer>" in result.format_errors[0]
    assert result.answer == "4" and result.answer_source == "vote"
    kinds = [s.kind for s in result.trajectory.segments]
    assert kinds[:3] == ["system", "prompt", "controller"] and "observation" in kinds


async def test_bad_arguments_are_typed_errors() -> None:
    router = _router(Cascade(["small", "big"]))
    with pytest.raises(UnknownTierError, match="low, high"):
        await router.arun("q", tier="platinum")
    with pytest.raises(ConfigError, match="non-empty"):
        await router.arun("   ")


def test_bad_config_is_rejected_with_a_fix() -> None:
    with pytest.raises(ConfigError, match="empty"):
        RouterConfig(experts=[], policy=Cascade(["a"]))
    with pytest.raises(ConfigError, match="unique"):
        RouterConfig(experts=_experts() + _experts()[:1], policy=Cascade(["small"]))
    with pytest.raises(UnknownTierError):
        RouterConfig(experts=_experts(), policy=Cascade(["small"]), default_tier="gold")
    with pytest.raises(UnknownExpertError, match="fallback_expert"):
        RouterConfig(experts=_experts(), policy=Cascade(["small"]), fallback_expert="ghost")
    with pytest.raises(ConfigError, match="decide"):
        RouterConfig(experts=_experts(), policy=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_steps"):
        RouterConfig(experts=_experts(), policy=Cascade(["small"]), max_steps=0)


def test_graph_runs_with_the_runtime_context_and_defaults() -> None:
    router = _router(ScriptedPolicy([Answer("42")]))
    state = asyncio.run(router.graph.ainvoke({"query": "q"}))
    assert state["answer"] == "42" and state["stop_reason"] == "answered"


def test_sync_wrapper() -> None:
    assert _router(ScriptedPolicy([Answer("7")])).run("q").answer == "7"


async def test_a_dead_ledger_fails_closed_no_call_is_made() -> None:
    from corl_graph import LedgerError

    class DeadLedger(InMemoryLedger):
        async def reserve(self, request, *, reservation_id=None):  # type: ignore[no-untyped-def]
            raise LedgerError("connection refused")

    big = FakeChatModel("4")
    experts = _experts(big=big)
    result = await _router(
        ScriptedPolicy([CallExpert("big", "q")]), experts=experts, ledger=DeadLedger()
    ).arun("q")
    assert result.calls[0].status == "failed" and "ledger unavailable" in (
        result.calls[0].error or ""
    )
    assert big.calls == 0 and result.cost_usd == 0.0


async def test_provider_errors_quoting_a_key_are_scrubbed_from_the_record() -> None:
    leaky = FakeChatModel(
        "x",
        fail_times=99,
        error=PermissionError("Incorrect API key provided: sk-live-abcdef123456"),
    )
    result = await _router(
        ScriptedPolicy([CallExpert("big", "q")]), experts=_experts(big=leaky)
    ).arun("q")
    record = str(result.trajectory.to_dict())
    assert "sk-live-abcdef123456" not in record and "[REDACTED]" in record
