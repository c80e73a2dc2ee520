"""One budgeted expert call: reserve the worst case, call with a timeout, settle, retry.

Each attempt is reserved and settled on its own, on the run's budget hold
(``corl_graph.budget.RunHold``: the ledger itself, or the run's envelope in it)::

    reserve(worst case) ─ refused ─────────────► status "denied", nothing spent
         │
         call (timeout_s) ─ reply ─────────────► settle(real cost)      status "ok"
              ├─ error (no reply, not billed) ─► release()              retry or "failed"
              ├─ connection lost while reading ─► settle(reserved amount) retry or "failed"
              ├─ timeout (may have been billed) ► settle(reserved amount) retry or "timeout"
              └─ cancelled (query deadline, shutdown) ► settle(reserved amount), re-raised

A ledger that cannot be reached fails closed: the call is not made. Settle and release are
idempotent by reservation id, so the hold retries a lost connection a few times (and shields
the operation from cancellation); if the ledger still
cannot record the outcome the run ends with ``LedgerError`` and the reservation stays HELD until
its lease ends, then charged at its reserved amount (spend is never under-counted).

The attempt's timeout is the expert's ``timeout_s`` or, when the query has a deadline, the time
left before it, whichever is shorter; no attempt starts after the deadline.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from corl_graph._exceptions import BudgetExceededError, CorlError, LedgerError
from corl_graph.budget import BudgetTier, Reservation, ReservationRequest, RunHold, Usage
from corl_graph.experts import AnswerExtractor, Expert, ExpertReply, ExpertRequest
from corl_graph.protocol import CallStatus, ExpertCall
from corl_graph.tracing import RouterTracer, redact

__all__ = ["call_expert_with_budget"]

# How long past its timeout a reservation is held before reconcile treats its holder as dead.
_LEASE_MARGIN_S = 60.0
# How long a cancelled call may spend recording its charge before giving up (the reservation
# then expires at the same amount).
_CANCEL_SETTLE_S = 5.0


@dataclass
class _Attempts:
    """What the attempts of one call have done so far (read on success, failure or cancel)."""

    spent: float = 0.0
    reserved: float = 0.0
    attempts: int = 0
    status: CallStatus = "failed"
    error: str = ""
    started: float = field(default_factory=time.perf_counter)


async def call_expert_with_budget(
    expert: Expert,
    request: ExpertRequest,
    *,
    hold: RunHold,
    tier: BudgetTier,
    tenant: str,
    run_id: str,
    tracer: RouterTracer,
    extract: AnswerExtractor,
    spent_usd: float,
    deadline: float | None = None,
) -> ExpertCall:
    """Run one expert call under the run's budget hold and return what happened.

    Raises only ``LedgerError`` (the ledger could not record a charge) and cancellation; every
    other failure is in the returned ``ExpertCall``. ``spent_usd`` is what the query spent
    before this call; ``deadline`` is a ``time.time()`` instant.
    """
    with tracer.expert_span(
        expert=expert.name,
        model=getattr(expert, "model_name", expert.name),
        provider=expert.provider,
        max_tokens=expert.max_output_tokens,
        tier=tier.name,
        tenant=tenant,
        subquery=request.subquery,
    ) as span:
        tried = _Attempts()
        reply: ExpertReply | None = None
        try:
            call, reply = await _attempts(
                expert, request, hold, tier, tenant, run_id, extract, tried, deadline
            )
        except (asyncio.CancelledError, LedgerError) as exc:
            # The span still gets what was charged, so traces and the ledger agree.
            error = "cancelled" if isinstance(exc, asyncio.CancelledError) else str(exc)
            call = _call(expert, request, "failed", error, tried)
            tracer.record_expert_call(span, call, remaining_usd=0.0, response_model=None)
            raise
        tracer.record_expert_call(
            span,
            call,
            remaining_usd=tier.remaining_usd(spent_usd + call.cost_usd),
            response_model=reply.response_model if reply else None,
            finish_reason=reply.finish_reason if reply else None,
        )
        return call


async def _attempts(
    expert: Expert,
    request: ExpertRequest,
    hold: RunHold,
    tier: BudgetTier,
    tenant: str,
    run_id: str,
    extract: AnswerExtractor,
    tried: _Attempts,
    deadline: float | None,
) -> tuple[ExpertCall, ExpertReply | None]:
    if not tier.allows(expert.name):  # the tier's allow-list: nothing reserved, nothing sent
        reason = f"tier {tier.name!r} may not call expert {expert.name!r}"
        return _call(expert, request, "denied", reason, tried), None
    for attempt in range(1, expert.max_retries + 2):
        timeout = _time_left(expert.timeout_s, deadline)
        if timeout <= 0:
            tried.status, tried.error = "timeout", "the query's deadline passed before the call"
            break
        in_tokens, worst = expert.worst_case(request)
        held = _request(expert, tier, tenant, run_id, in_tokens, worst)
        try:
            reservation = await hold.reserve(held)
        except BudgetExceededError as exc:
            denied: CallStatus = "denied" if attempt == 1 else tried.status
            return _call(expert, request, denied, str(exc), tried), None
        except LedgerError as exc:
            msg = f"ledger unavailable, call not made: {exc}"
            return _call(expert, request, "failed", msg, tried), None
        tried.reserved += worst
        tried.attempts = attempt
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for wraps the call in a task.
            async with asyncio.timeout(timeout):
                reply = await expert.agenerate(request)
        except TimeoutError:
            # The provider may have billed a request we gave up on: charge the worst case.
            await _settle_worst(hold, reservation, in_tokens, expert.max_output_tokens, worst)
            tried.spent += worst
            tried.status, tried.error = "timeout", f"{expert.name} timed out after {timeout:.3g}s"
        except asyncio.CancelledError:
            await _settle_on_cancel(hold, reservation, in_tokens, expert, worst, tried)
            raise
        except CorlError as exc:  # deterministic (e.g. no recording): retrying cannot help
            await hold.release(reservation.id)
            return _call(expert, request, "failed", str(exc), tried), None
        except Exception as exc:  # transport / provider error
            tried.status = "failed"
            tried.error = f"{expert.name} failed: {type(exc).__name__}: {exc}"
            if _maybe_billed(exc):
                await _settle_worst(hold, reservation, in_tokens, expert.max_output_tokens, worst)
                tried.spent += worst
                tried.error += " (lost after the request was sent: charged at its reserved amount)"
            else:  # refused, or answered with an error status: no reply, so nothing billed
                await hold.release(reservation.id)
        else:
            # an impossible provider report is charged at the worst case, never refunded
            usage, reply = expert.usage_of(reply, in_tokens, worst)
            await hold.settle(reservation.id, usage)
            tried.spent += usage.cost_usd
            return _ok(expert, request, reply, extract, tried), reply
        if attempt <= expert.max_retries:
            backoff = expert.retry_backoff_s * 2 ** (attempt - 1)
            if _time_left(backoff + 0.001, deadline) <= backoff:
                break  # no time left for another attempt after the back-off
            await asyncio.sleep(backoff)
    return _call(expert, request, tried.status, tried.error, tried), None


# Transport errors raised after the request went out, while the reply was being read: the
# provider may have generated (and billed) a reply it could not deliver. Matched by class name
# so that the core needs no HTTP library (httpx, aiohttp and the standard library's names).
_AFTER_SEND = frozenset(
    {
        "ReadError",
        "ReadTimeout",
        "RemoteProtocolError",
        "APITimeoutError",
        "ServerDisconnectedError",
        "ClientPayloadError",
        "IncompleteRead",
        "RemoteDisconnected",
    }
)


def _maybe_billed(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain of a client error is short
        if seen is None:
            return False
        if type(seen).__name__ in _AFTER_SEND:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _time_left(limit_s: float, deadline: float | None) -> float:
    return limit_s if deadline is None else min(limit_s, deadline - time.time())


def _request(
    expert: Expert, tier: BudgetTier, tenant: str, run_id: str, in_tokens: int, worst: float
) -> ReservationRequest:
    """One attempt's reservation: its worst case, held for the expert's timeout and a margin."""
    return ReservationRequest(
        tenant=tenant,
        run_id=run_id,
        tier=tier,
        expert=expert.name,
        amount_usd=worst,
        input_tokens=in_tokens,
        max_output_tokens=expert.max_output_tokens,
        lease_s=expert.timeout_s + _LEASE_MARGIN_S,
    )


async def _settle_worst(
    hold: RunHold,
    reservation: Reservation,
    in_tokens: int,
    out_tokens: int,
    worst: float,
) -> None:
    usage = Usage(in_tokens, out_tokens, worst, estimated=True)
    await hold.settle(reservation.id, usage)


async def _settle_on_cancel(
    hold: RunHold,
    reservation: Reservation,
    in_tokens: int,
    expert: Expert,
    worst: float,
    tried: _Attempts,
) -> None:
    """A cancelled call may have been billed: settle it at its worst case, best effort."""
    settle = _settle_worst(hold, reservation, in_tokens, expert.max_output_tokens, worst)
    try:
        await asyncio.wait_for(asyncio.shield(settle), _CANCEL_SETTLE_S)
    except (LedgerError, TimeoutError, asyncio.CancelledError):
        return  # left HELD: reconcile charges the same amount once the lease ends
    tried.spent += worst


def _ok(
    expert: Expert,
    request: ExpertRequest,
    reply: ExpertReply,
    extract: AnswerExtractor,
    tried: _Attempts,
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
        cost_usd=tried.spent,
        estimated=reply.estimated,
        reserved_usd=tried.reserved,
        attempts=tried.attempts,
        latency_s=time.perf_counter() - tried.started,
        tool_calls=tuple(reply.tool_calls),
    )


def _call(
    expert: Expert, request: ExpertRequest, status: CallStatus, error: str, tried: _Attempts
) -> ExpertCall:
    return ExpertCall(
        expert=expert.name,
        subquery=request.subquery,
        status=status,
        cost_usd=tried.spent,
        estimated=tried.spent > 0,
        reserved_usd=tried.reserved,
        attempts=tried.attempts,
        latency_s=time.perf_counter() - tried.started,
        # Provider errors quote rejected keys; the record goes to stores, transcripts and logs.
        error=redact(error),
    )
