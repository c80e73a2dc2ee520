"""One budgeted expert call: reserve the worst case, call with a timeout, settle, retry.

Each attempt is reserved and settled on its own::

    reserve(worst case) ─ refused ─────────────► status "denied", nothing spent
         │
         call (timeout_s) ─ reply ─────────────► settle(real cost)      status "ok"
              ├─ error (no reply, not billed) ─► release()              retry or "failed"
              ├─ connection lost while reading ─► settle(reserved amount) retry or "failed"
              ├─ timeout (may have been billed) ► settle(reserved amount) retry or "timeout"
              └─ cancelled (query deadline, shutdown) ► settle(reserved amount), re-raised

A ledger that cannot be reached fails closed: the call is not made. Settle and release are
idempotent by reservation id, so a lost connection is retried a few times; if the ledger still
cannot record the outcome the run ends with ``LedgerError`` and the reservation stays HELD until
its lease ends, then charged at its reserved amount (spend is never under-counted).

The attempt's timeout is the expert's ``timeout_s`` or, when the query has a deadline, the time
left before it, whichever is shorter; no attempt starts after the deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from corl_graph._exceptions import BudgetExceededError, CorlError, LedgerError
from corl_graph.budget import (
    BudgetLeases,
    BudgetTier,
    InMemoryLedger,
    Ledger,
    Reservation,
    ReservationRequest,
    Usage,
)
from corl_graph.budget._envelope import QueryEnvelope, envelope_request
from corl_graph.experts import AnswerExtractor, Expert, ExpertReply, ExpertRequest
from corl_graph.protocol import CallStatus, ExpertCall
from corl_graph.tracing import RouterTracer, redact

__all__ = [
    "BudgetHolder",
    "call_expert_with_budget",
    "close_envelope",
    "close_envelopes_on_error",
    "hold_for_run",
    "run_envelopes",
]

# Where a run's attempts are reserved: the ledger itself, or the run's envelope in it.
BudgetHolder = Ledger | QueryEnvelope | BudgetLeases

# How long past its timeout a reservation is held before reconcile treats its holder as dead.
_LEASE_MARGIN_S = 60.0
# Settle / release after a lost ledger connection: tries and first back-off. Safe to repeat
# because both are idempotent by reservation id.
_LEDGER_TRIES = 3
_LEDGER_BACKOFF_S = 0.05
# How long a cancelled call may spend recording its charge before giving up (the reservation
# then expires at the same amount).
_CANCEL_SETTLE_S = 5.0


@dataclass
class _Tally:
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
    ledger: BudgetHolder,
    tier: BudgetTier,
    tenant: str,
    run_id: str,
    tracer: RouterTracer,
    extract: AnswerExtractor,
    remaining_usd: float,
    deadline: float | None = None,
) -> ExpertCall:
    """Run one expert call under the ledger and return what happened.

    Raises only ``LedgerError`` (the ledger could not record a charge) and cancellation; every
    other failure is in the returned ``ExpertCall``. ``deadline`` is a ``time.time()`` instant.
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
        tally = _Tally()
        reply: ExpertReply | None = None
        try:
            call, reply = await _attempts(
                expert, request, ledger, tier, tenant, run_id, extract, tally, deadline
            )
        except (asyncio.CancelledError, LedgerError) as exc:
            # The span still gets what was charged, so traces and the ledger agree.
            error = "cancelled" if isinstance(exc, asyncio.CancelledError) else str(exc)
            call = _call(expert, request, "failed", error, tally)
            tracer.record_expert_call(span, call, remaining_usd=0.0, response_model=None)
            raise
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
    ledger: BudgetHolder,
    tier: BudgetTier,
    tenant: str,
    run_id: str,
    extract: AnswerExtractor,
    tally: _Tally,
    deadline: float | None,
) -> tuple[ExpertCall, ExpertReply | None]:
    if not tier.allows(expert.name):  # the tier's allow-list: nothing reserved, nothing sent
        reason = f"tier {tier.name!r} may not call expert {expert.name!r}"
        return _call(expert, request, "denied", reason, tally), None
    for attempt in range(1, expert.max_retries + 2):
        timeout = _time_left(expert.timeout_s, deadline)
        if timeout <= 0:
            tally.status, tally.error = "timeout", "the query's deadline passed before the call"
            break
        in_tokens, worst = expert.worst_case(request)
        try:
            reservation = await _reserve(ledger, expert, tier, tenant, run_id, in_tokens, worst)
        except BudgetExceededError as exc:
            denied: CallStatus = "denied" if attempt == 1 else tally.status
            return _call(expert, request, denied, str(exc), tally), None
        except LedgerError as exc:
            msg = f"ledger unavailable, call not made: {exc}"
            return _call(expert, request, "failed", msg, tally), None
        tally.reserved += worst
        tally.attempts = attempt
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for wraps the call in a task.
            async with asyncio.timeout(timeout):
                reply = await expert.agenerate(request)
        except TimeoutError:
            # The provider may have billed a request we gave up on: charge the worst case.
            await _settle_worst(ledger, reservation, in_tokens, expert.max_output_tokens, worst)
            tally.spent += worst
            tally.status, tally.error = "timeout", f"{expert.name} timed out after {timeout:.3g}s"
        except asyncio.CancelledError:
            await _settle_on_cancel(ledger, reservation, in_tokens, expert, worst, tally)
            raise
        except CorlError as exc:  # deterministic (e.g. no recording): retrying cannot help
            await _retrying(ledger, partial(ledger.release, reservation.id))
            return _call(expert, request, "failed", str(exc), tally), None
        except Exception as exc:  # transport / provider error
            tally.status = "failed"
            tally.error = f"{expert.name} failed: {type(exc).__name__}: {exc}"
            if _maybe_billed(exc):
                await _settle_worst(ledger, reservation, in_tokens, expert.max_output_tokens, worst)
                tally.spent += worst
                tally.error += " (lost after the request was sent: charged at its reserved amount)"
            else:  # refused, or answered with an error status: no reply, so nothing billed
                await _retrying(ledger, partial(ledger.release, reservation.id))
        else:
            # an impossible provider report is charged at the worst case, never refunded
            usage, reply = expert.usage_of(reply, in_tokens, worst)
            await _retrying(ledger, partial(ledger.settle, reservation.id, usage))
            tally.spent += usage.cost_usd
            return _ok(expert, request, reply, extract, tally), reply
        if attempt <= expert.max_retries:
            backoff = expert.retry_backoff_s * 2 ** (attempt - 1)
            if _time_left(backoff + 0.001, deadline) <= backoff:
                break  # no time left for another attempt after the back-off
            await asyncio.sleep(backoff)
    return _call(expert, request, tally.status, tally.error, tally), None


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


async def _reserve(
    ledger: BudgetHolder,
    expert: Expert,
    tier: BudgetTier,
    tenant: str,
    run_id: str,
    in_tokens: int,
    worst: float,
) -> Reservation:
    request = ReservationRequest(
        tenant,
        run_id,
        tier,
        expert.name,
        worst,
        in_tokens,
        expert.max_output_tokens,
        lease_s=expert.timeout_s + _LEASE_MARGIN_S,
    )
    rid = uuid.uuid4().hex  # one id for every try: a retried reserve cannot hold twice

    def release_if_held(task: asyncio.Future[Reservation]) -> None:
        # Cancelled while reserving: nobody will call, so give the hold back once it lands.
        if not task.cancelled() and task.exception() is None:
            _background(ledger.release(rid))

    return await _retrying(
        ledger, lambda: ledger.reserve(request, reservation_id=rid), on_cancel=release_if_held
    )


# Awaited directly by _retrying: their operations never suspend, or (BudgetLeases) shield
# the ledger work they do suspend on, so a cancellation cannot land half way through one.
_NEVER_SUSPENDS = (InMemoryLedger, QueryEnvelope, BudgetLeases)
_pending: set[asyncio.Task[Reservation]] = set()  # strong references to background releases


def _background(op: Coroutine[Any, Any, Any]) -> None:
    task = asyncio.ensure_future(op)
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no warning


async def _retrying(
    ledger: BudgetHolder,
    op: Callable[[], Awaitable[Reservation]],
    *,
    on_cancel: Callable[[asyncio.Future[Reservation]], None] | None = None,
) -> Reservation:
    """Run an idempotent ledger operation; retry it after a ``LedgerError``, then give up.

    Shielded: a cancelled caller must not abandon a settle half way (the operation finishes
    in the background and the ledger stays consistent either way); ``on_cancel`` is called
    when that background operation is done. The in-memory ledger's operations never suspend,
    so no cancellation can land inside one: they are awaited directly, without the task and
    the event-loop round that shielding costs.
    """
    if type(ledger) in _NEVER_SUSPENDS:
        return await op()
    for attempt in range(_LEDGER_TRIES):
        task = asyncio.ensure_future(op())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if on_cancel is not None:
                task.add_done_callback(on_cancel)
            raise
        except LedgerError:
            if attempt == _LEDGER_TRIES - 1:
                raise
            await asyncio.sleep(_LEDGER_BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


async def _settle_worst(
    ledger: BudgetHolder,
    reservation: Reservation,
    in_tokens: int,
    out_tokens: int,
    worst: float,
) -> None:
    usage = Usage(in_tokens, out_tokens, worst, estimated=True)
    await _retrying(ledger, lambda: ledger.settle(reservation.id, usage))


async def _settle_on_cancel(
    ledger: BudgetHolder,
    reservation: Reservation,
    in_tokens: int,
    expert: Expert,
    worst: float,
    tally: _Tally,
) -> None:
    """A cancelled call may have been billed: settle it at its worst case, best effort."""
    settle = _settle_worst(ledger, reservation, in_tokens, expert.max_output_tokens, worst)
    try:
        await asyncio.wait_for(asyncio.shield(settle), _CANCEL_SETTLE_S)
    except (LedgerError, TimeoutError, asyncio.CancelledError):
        return  # left HELD: reconcile charges the same amount once the lease ends
    tally.spent += worst


def _ok(
    expert: Expert,
    request: ExpertRequest,
    reply: ExpertReply,
    extract: AnswerExtractor,
    tally: _Tally,
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
        cost_usd=tally.spent,
        estimated=reply.estimated,
        reserved_usd=tally.reserved,
        attempts=tally.attempts,
        latency_s=time.perf_counter() - tally.started,
        tool_calls=tuple(reply.tool_calls),
    )


def _call(
    expert: Expert, request: ExpertRequest, status: CallStatus, error: str, tally: _Tally
) -> ExpertCall:
    return ExpertCall(
        expert=expert.name,
        subquery=request.subquery,
        status=status,
        cost_usd=tally.spent,
        estimated=tally.spent > 0,
        reserved_usd=tally.reserved,
        attempts=tally.attempts,
        latency_s=time.perf_counter() - tally.started,
        # Provider errors quote rejected keys; the record goes to stores, transcripts and logs.
        error=redact(error),
    )


# The envelopes opened while one Router.arun runs, so that a run that fails can settle them.
run_envelopes: ContextVar[list[str] | None] = ContextVar("corl_run_envelopes", default=None)


async def hold_for_run(
    ledger: Ledger,
    envelopes: dict[str, QueryEnvelope | None],
    *,
    tier: BudgetTier,
    tenant: str,
    run_id: str,
    lease_s: float,
    source: Ledger | BudgetLeases | None = None,
) -> BudgetHolder:
    """The run's envelope, reserved at its first call (``budget_hold="per_query"``) from
    ``source`` (``ledger`` itself, or with "leased" the router's ``BudgetLeases`` over it).

    An envelope that is refused makes the run reserve per attempt from ``ledger`` from then on
    (recorded as None); an unreachable ledger is left to the attempt, which fails closed.
    """
    if run_id in envelopes:
        return envelopes[run_id] or ledger
    origin = source or ledger
    request = envelope_request(tenant, run_id, tier, lease_s)
    rid = uuid.uuid4().hex

    def release_if_held(task: asyncio.Future[Reservation]) -> None:
        if not task.cancelled() and task.exception() is None:
            _background(origin.release(rid))

    try:
        reservation = await _retrying(
            origin, lambda: origin.reserve(request, reservation_id=rid), on_cancel=release_if_held
        )
    except BudgetExceededError:
        envelopes[run_id] = None
        return ledger
    except LedgerError:
        return ledger
    envelope = envelopes[run_id] = QueryEnvelope(reservation)
    opened = run_envelopes.get()
    if opened is not None:
        opened.append(run_id)
    return envelope


async def close_envelope(
    source: Ledger | BudgetLeases, envelopes: dict[str, QueryEnvelope | None], run_id: str
) -> None:
    """Settle the run's envelope, where it was reserved (``source``), with what its calls
    cost (nothing to do without one)."""
    envelope = envelopes.pop(run_id, None)
    if envelope is not None:
        usage = envelope.usage()
        await _retrying(source, lambda: source.settle(envelope.reservation.id, usage))


async def close_envelopes_on_error(
    source: Ledger | BudgetLeases, envelopes: dict[str, QueryEnvelope | None], run_ids: list[str]
) -> None:
    """A run that raised or was cancelled: settle its envelopes at what was spent, best effort
    (one left HELD expires charged at the whole cap, never less)."""
    for run_id in run_ids:
        close = close_envelope(source, envelopes, run_id)
        try:
            await asyncio.wait_for(asyncio.shield(close), _CANCEL_SETTLE_S)
        except (LedgerError, TimeoutError, asyncio.CancelledError):
            continue
