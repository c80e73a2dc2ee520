"""One budgeted expert call: reserve the worst case, call with a timeout, settle, retry.

Each attempt is reserved and settled on its own::

    reserve(worst case) ─ refused ─────────────► status "denied", nothing spent
         │
         call (timeout_s) ─ reply ─────────────► settle(real cost)      status "ok"
              ├─ error (no reply, not billed) ─► release()              retry or "failed"
              └─ timeout (may have been billed) ► settle(reserved amount) retry or "timeout"

A ledger that cannot be reached fails closed: the call is not made.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

from corl_graph._exceptions import BudgetExceededError, CorlError, LedgerError
from corl_graph.budget import BudgetTier, Ledger, ReservationRequest, Usage
from corl_graph.experts import AnswerExtractor, Expert, ExpertReply, ExpertRequest
from corl_graph.protocol import CallStatus, ExpertCall
from corl_graph.tracing import RouterTracer, redact

__all__ = ["call_expert_with_budget"]

# How long past its timeout a reservation is held before reconcile treats its holder as dead.
_LEASE_MARGIN_S = 60.0


async def call_expert_with_budget(
    expert: Expert,
    request: ExpertRequest,
    *,
    ledger: Ledger,
    tier: BudgetTier,
    tenant: str,
    run_id: str,
    tracer: RouterTracer,
    extract: AnswerExtractor,
    remaining_usd: float,
) -> ExpertCall:
    """Run one expert call under the ledger and return what happened; never raises a RunError."""
    with tracer.expert_span(
        expert=expert.name,
        model=getattr(expert, "model_name", expert.name),
        provider=expert.provider,
        max_tokens=expert.max_output_tokens,
        tier=tier.name,
        tenant=tenant,
        subquery=request.subquery,
    ) as span:
        started = time.perf_counter()
        call, reply = await _attempts(expert, request, ledger, tier, tenant, run_id, extract)
        call = _with_latency(call, time.perf_counter() - started)
        tracer.record_expert_call(
            span,
            call,
            remaining_usd=max(remaining_usd - call.cost_usd, 0.0),
            response_model=reply.response_model if reply else None,
            finish_reason=reply.finish_reason if reply else None,
        )
        return call


async def _attempts(
    expert: Expert,
    request: ExpertRequest,
    ledger: Ledger,
    tier: BudgetTier,
    tenant: str,
    run_id: str,
    extract: AnswerExtractor,
) -> tuple[ExpertCall, ExpertReply | None]:
    spent = reserved_total = 0.0
    status: CallStatus = "failed"
    error = ""
    for attempt in range(1, expert.max_retries + 2):
        in_tokens, worst = expert.worst_case(request)
        try:
            reservation = await ledger.reserve(
                ReservationRequest(
                    tenant,
                    run_id,
                    tier,
                    expert.name,
                    worst,
                    in_tokens,
                    expert.max_output_tokens,
                    lease_s=expert.timeout_s + _LEASE_MARGIN_S,
                ),
                reservation_id=uuid.uuid4().hex,
            )
        except BudgetExceededError as exc:
            denied: CallStatus = "denied" if attempt == 1 else status
            return _call(
                expert, request, denied, str(exc), attempt - 1, spent, reserved_total
            ), None
        except LedgerError as exc:
            msg = f"ledger unavailable, call not made: {exc}"
            return _call(expert, request, "failed", msg, attempt - 1, spent, reserved_total), None
        reserved_total += worst
        try:
            reply = await asyncio.wait_for(expert.agenerate(request), expert.timeout_s)
        except TimeoutError:
            # The provider may have billed a request we gave up on: charge the worst case.
            await ledger.settle(
                reservation.id, Usage(in_tokens, expert.max_output_tokens, worst, estimated=True)
            )
            spent += worst
            status, error = "timeout", f"{expert.name} timed out after {expert.timeout_s}s"
        except CorlError as exc:  # deterministic (e.g. no recording): retrying cannot help
            await ledger.release(reservation.id)
            return _call(expert, request, "failed", str(exc), attempt, spent, reserved_total), None
        except Exception as exc:  # transport / provider error: no reply, so nothing billed
            await ledger.release(reservation.id)
            status, error = "failed", f"{expert.name} failed: {type(exc).__name__}: {exc}"
        else:
            cost = expert.cost_of(reply)
            usage = Usage(reply.input_tokens, reply.output_tokens, cost, reply.estimated)
            await ledger.settle(reservation.id, usage)
            return _ok(
                expert, request, reply, extract, attempt, spent + cost, reserved_total
            ), reply
        if attempt <= expert.max_retries:
            await asyncio.sleep(expert.retry_backoff_s * 2 ** (attempt - 1))
    return _call(
        expert, request, status, error, expert.max_retries + 1, spent, reserved_total
    ), None


def _ok(
    expert: Expert,
    request: ExpertRequest,
    reply: ExpertReply,
    extract: AnswerExtractor,
    attempts: int,
    cost: float,
    reserved: float,
) -> ExpertCall:
    truncated = reply.finish_reason == "length"
    answer = reply.answer if reply.answer is not None or truncated else extract(reply.text)
    return ExpertCall(
        expert=expert.name,
        subquery=request.subquery,
        status="truncated" if truncated else "ok",
        text=reply.text,
        answer=None if truncated else answer,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        cost_usd=cost,
        estimated=reply.estimated,
        reserved_usd=reserved,
        attempts=attempts,
    )


def _call(
    expert: Expert,
    request: ExpertRequest,
    status: CallStatus,
    error: str,
    attempts: int,
    spent: float,
    reserved: float,
) -> ExpertCall:
    return ExpertCall(
        expert=expert.name,
        subquery=request.subquery,
        status=status,
        cost_usd=spent,
        estimated=spent > 0,
        reserved_usd=reserved,
        attempts=attempts,
        # Provider errors quote rejected keys; the record goes to stores, transcripts and logs.
        error=redact(error),
    )


def _with_latency(call: ExpertCall, seconds: float) -> ExpertCall:
    return replace(call, latency_s=seconds)
