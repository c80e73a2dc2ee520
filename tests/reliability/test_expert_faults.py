"""Faulty experts and controllers over real HTTP: every query ends in time, the books agree.

The experts are ``ChatOpenAI(max_retries=0)`` clients of a loopback server that fakes an
OpenAI-compatible endpoint (tests/reliability/fake_openai.py), so the client's own transport
path (httpx, status handling, JSON parsing) runs for every fault.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from corl_graph.integrations._common import unanswered_error
from fake_openai import Behavior, FakeOpenAI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from reliability_books import PRICE, chat_model, check_books, expert, tracing

from corl_graph._exceptions import ExpertError, PolicyError, RunError
from corl_graph.budget import InMemoryLedger, TenantBudget
from corl_graph.experts import ChatModelExpert, ExpertRequest
from corl_graph.graph import Router, RouterConfig, RouteResult
from corl_graph.policies import LLMPolicy, Policy
from corl_graph.protocol import Aggregate, CallExpert
from corl_graph.testing import ScriptedPolicy

QUESTION = "What is 2 + 2?"
OK_COST = PRICE.cost(12, 6)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def _router(
    experts: list[ChatModelExpert], policy: Policy | None = None, **config: object
) -> tuple[Router, InMemoryLedger, InMemorySpanExporter]:
    provider, exporter = tracing()
    ledger = InMemoryLedger(default_budget=TenantBudget("*", 100.0, "total"))
    policy = policy or ScriptedPolicy([CallExpert(experts[0].name, QUESTION), Aggregate()])
    rc = RouterConfig(
        experts=experts,
        policy=policy,
        ledger=ledger,
        tracer_provider=provider,
        default_tier="high",
        **config,
    )  # type: ignore[arg-type]
    return Router(rc), ledger, exporter


async def _run(router: Router, *, within_s: float) -> RouteResult:
    started = time.monotonic()
    result = await asyncio.wait_for(router.arun(QUESTION), within_s + 5)
    assert time.monotonic() - started < within_s, "the query overran its deadline"
    return result


async def test_rate_limited_then_ok_charges_only_the_reply(fake: FakeOpenAI) -> None:
    fake.behave("m429", Behavior(status=429, fail_first=1))
    router, ledger, exporter = _router([expert(fake, "m429", max_retries=1)])
    result = await _run(router, within_s=5)
    assert result.answer == "4" and result.calls[0].attempts == 2
    books = await check_books(ledger, [result], exporter)
    assert books["settled"] == pytest.approx(OK_COST) and books["reservations"] == 2


@pytest.mark.parametrize("status", [429, 500])
async def test_failing_endpoint_ends_with_a_typed_error_and_no_charge(
    fake: FakeOpenAI, status: int
) -> None:
    fake.behave("bad", Behavior(status=status))
    router, ledger, exporter = _router([expert(fake, "bad", max_retries=2)])
    result = await _run(router, within_s=5)
    assert result.answer is None and result.calls[0].status == "failed"
    assert isinstance(unanswered_error(result), ExpertError)
    assert "sk-test-key" not in (result.calls[0].error or "")
    books = await check_books(ledger, [result], exporter)
    assert books["settled"] == 0.0 and books["reservations"] == 3  # three attempts, released


async def test_timeouts_are_charged_at_the_reserved_worst_case(fake: FakeOpenAI) -> None:
    fake.behave("slow", Behavior(delay_s=3.0))
    e = expert(fake, "slow", timeout_s=0.3, max_retries=1)
    router, ledger, exporter = _router([e])
    result = await _run(router, within_s=2.5)
    call = result.calls[0]
    assert call.status == "timeout" and call.attempts == 2 and call.estimated
    worst = e.worst_case(ExpertRequest("", QUESTION, QUESTION))[1]
    assert call.cost_usd == pytest.approx(2 * worst)
    await check_books(ledger, [result], exporter)


@pytest.mark.parametrize(
    ("behavior", "status", "answer"),
    [
        (Behavior(content=""), "ok", None),  # empty output
        (Behavior(finish_reason="length", content="The answer is"), "truncated", "The answer is"),
        (Behavior(usage=False), "ok", "4"),  # no usage: estimated cost
    ],
    ids=["empty", "truncated", "no-usage"],
)
async def test_odd_replies_are_charged_and_never_crash(
    fake: FakeOpenAI, behavior: Behavior, status: str, answer: str | None
) -> None:
    fake.behave("odd", behavior)
    router, ledger, exporter = _router([expert(fake, "odd")])
    result = await _run(router, within_s=5)
    assert result.calls[0].status == status and result.answer == answer
    assert result.calls[0].estimated == (not behavior.usage)
    books = await check_books(ledger, [result], exporter)
    assert books["settled"] > 0


async def test_connection_cut_mid_reply_is_charged_as_maybe_billed(fake: FakeOpenAI) -> None:
    fake.behave("cut", Behavior(cut=True))
    e = expert(fake, "cut", max_retries=1)
    router, ledger, exporter = _router([e])
    result = await _run(router, within_s=5)
    call = result.calls[0]
    assert call.status == "failed" and call.attempts == 2 and result.answer is None
    # The provider may have generated (and billed) the reply it failed to deliver.
    assert call.cost_usd == pytest.approx(call.reserved_usd) and call.estimated
    await check_books(ledger, [result], exporter)


async def test_refused_connection_is_not_charged() -> None:
    with FakeOpenAI() as gone:
        pass  # started and stopped: its port now refuses connections
    router, ledger, exporter = _router([expert(gone, "any", max_retries=1)])
    result = await _run(router, within_s=5)
    assert result.calls[0].status == "failed" and result.cost_usd == 0.0
    await check_books(ledger, [result], exporter)


async def test_controller_down_ends_with_a_typed_error_and_no_spend(fake: FakeOpenAI) -> None:
    small = fake.behave("small", Behavior())
    with FakeOpenAI() as gone:
        pass
    policy = LLMPolicy(chat_model(gone, "controller"), timeout_s=2)
    router, ledger, exporter = _router([expert(fake, "small")], policy)
    result = await _run(router, within_s=5)
    # A dead controller is not papered over with expert calls (tests/graph pins this design).
    assert result.answer is None and result.stop_reason == "policy_error"
    assert isinstance(unanswered_error(result), PolicyError) and small.calls == 0
    assert "sk-test-key" not in result.format_errors[0]
    await check_books(ledger, [result], exporter)


async def test_malformed_controller_output_falls_back(fake: FakeOpenAI) -> None:
    fake.behave("small", Behavior())
    ctrl = fake.behave("ctrl", Behavior(content='I would <call expert="small">2+2'))
    policy = LLMPolicy(chat_model(fake, "ctrl"), timeout_s=2)
    router, ledger, exporter = _router([expert(fake, "small")], policy)
    result = await _run(router, within_s=5)
    assert result.answer == "4" and ctrl.calls >= 1
    assert result.format_errors and "unterminated <call>" in result.format_errors[0]
    await check_books(ledger, [result], exporter)


async def test_query_deadline_cuts_a_slow_expert_short(fake: FakeOpenAI) -> None:
    fake.behave("slow", Behavior(delay_s=4.0))
    router, ledger, exporter = _router([expert(fake, "slow", timeout_s=10)], query_timeout_s=0.5)
    result = await _run(router, within_s=1.5)
    assert result.stop_reason == "deadline" and result.answer is None
    assert result.calls[0].status == "timeout" and result.cost_usd > 0  # may have been billed
    await check_books(ledger, [result], exporter)


async def test_query_deadline_cuts_a_hanging_controller_short(fake: FakeOpenAI) -> None:
    fake.behave("small", Behavior())
    fake.behave("ctrl", Behavior(delay_s=4.0, content="<answer>5</answer>"))
    policy = LLMPolicy(chat_model(fake, "ctrl"), timeout_s=30)
    router, ledger, exporter = _router([expert(fake, "small")], policy, query_timeout_s=0.5)
    result = await _run(router, within_s=1.5)
    assert result.stop_reason == "deadline" and result.answer is None
    assert "deadline" in result.format_errors[0] and not result.calls
    await check_books(ledger, [result], exporter)


async def test_deadline_keeps_answers_already_paid_for(fake: FakeOpenAI) -> None:
    fake.behave("fast", Behavior())
    fake.behave("slow", Behavior(delay_s=4.0))
    experts = [expert(fake, "fast"), expert(fake, "slow", timeout_s=10)]
    script = ScriptedPolicy([CallExpert("fast", QUESTION), CallExpert("slow", QUESTION)])
    router, ledger, exporter = _router(experts, script, query_timeout_s=0.6)
    result = await _run(router, within_s=1.6)
    assert result.stop_reason == "deadline" and result.answer == "4"  # the fast one's vote
    await check_books(ledger, [result], exporter)


async def test_mixed_faults_under_concurrency_keep_the_books(fake: FakeOpenAI) -> None:
    behaviors = {
        "ok": Behavior(),
        "r429": Behavior(status=429, fail_first=6),
        "e500": Behavior(status=500),
        "slow": Behavior(delay_s=2.0),
        "cut": Behavior(cut=True),
        "nousage": Behavior(usage=False),
        "length": Behavior(finish_reason="length"),
    }
    for name, behavior in behaviors.items():
        fake.behave(name, behavior)
    experts = [expert(fake, n, timeout_s=0.4, max_retries=1) for n in behaviors]
    provider, exporter = tracing()
    ledger = InMemoryLedger(default_budget=TenantBudget("*", 100.0, "total"))
    names = list(behaviors)

    async def one(i: int) -> RouteResult:
        picks = [names[i % len(names)], names[(i * 3 + 1) % len(names)]]
        policy = ScriptedPolicy([CallExpert(n, f"{QUESTION} #{i}") for n in picks])
        rc = RouterConfig(
            experts=experts,
            policy=policy,
            ledger=ledger,
            default_tier="high",
            tracer_provider=provider,
            query_timeout_s=3.0,
        )
        return await Router(rc).arun(QUESTION)

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(21)))
    assert time.monotonic() - started < 6
    for r in results:
        error = unanswered_error(r)
        assert r.answer is not None or isinstance(error, RunError) or r.stop_reason == "deadline"
    books = await check_books(ledger, results, exporter)
    assert books["settled"] > 0
