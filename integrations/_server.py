"""An OpenAI-compatible HTTP server for the router (FastAPI; run with uvicorn).

    GET  /health               liveness, and whether the server is draining
    GET  /v1/models            one model per tier: "corl-low", "corl-medium", "corl-high"
    GET  /v1/models/{id}       one of them (404 model_not_found otherwise)
    POST /v1/chat/completions  routes the chat under the tier the model names (SSE or not)
    GET  /v1/budget            the caller's own tenant spend in the current period

Each API key acts for one tenant: the tenant is never read from the request, so a key can
neither spend nor see another tenant's budget. Shutdown drains: new requests get 503, the
ones in flight get ``shutdown_grace_s`` to finish, and reservations still open after that
(their calls were cancelled) are settled at their reserved amount, so spend is never
under-counted; then expired leases are reconciled and the ledger is closed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from corl_graph._exceptions import (
    BudgetExceededError,
    ConfigError,
    LedgerError,
    QueryTimeoutError,
    RunError,
    ToolsUnsupportedError,
)
from corl_graph.budget import TenantBudget, TierSet
from corl_graph.experts import ReplayExpert
from corl_graph.graph import Router, RouterConfig, RouteResult

from ._common import unanswered_error
from ._keys import KeyFile
from ._limits import RateLimiter, RedisRateLimiter
from ._openai_wire import (
    ApiError,
    ChatRequest,
    budget_exhausted,
    completion,
    parse_request,
    sse_chunks,
)
from ._openapi import server_openapi
from ._server_config import ServerConfig
from ._server_tracing import server_tracer_provider
from ._tracking import TrackingLedger

__all__ = ["create_app"]

log = logging.getLogger("corl_graph.server")


@dataclass
class _State:
    config: ServerConfig
    router: Router
    ledger: TrackingLedger
    keys: dict[str, str]
    budgets: dict[str, TenantBudget]
    revoked: set[str] = field(default_factory=set)
    allowed: dict[str, frozenset[str]] = field(default_factory=dict)  # tenant -> tiers
    limiter: RateLimiter | RedisRateLimiter | None = None
    # tenant -> its own router, for tenants with allowed_experts (tiers narrowed to them)
    routers: dict[str, Router] = field(default_factory=dict)
    key_file: KeyFile | None = None
    query_ids: dict[str, str] = field(default_factory=dict)
    draining: bool = False
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


def create_app(
    config: ServerConfig,
    *,
    router_config: RouterConfig | None = None,
    config_path: str | Path | None = None,
) -> FastAPI:
    """The FastAPI app for ``config``; ``router_config`` replaces the file's experts, policy and
    tiers (for programmatic use, e.g. LangChain chat models as experts). With ``config_path``
    (the file ``config`` came from) API keys and revocations are re-read when the file
    changes, and on SIGHUP: a revoked key stops working without a restart (``_keys``).

    >>> from corl_graph.integrations import ServerConfig
    >>> cfg = ServerConfig.parse({"tenants": [{"name": "acme", "limit_usd": 5, "api_keys": ["k"]}],
    ...     "experts": [{"kind": "openai", "name": "small", "model": "gpt-4o-mini",
    ...                  "price": {"input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6}}],
    ...     "ledger_url": "memory://"})
    >>> sorted(r.path for r in create_app(cfg).routes if r.path.startswith("/v1"))
    ['/v1/budget', '/v1/chat/completions', '/v1/models', '/v1/models/{model_id}']
    """
    base_ledger = (
        router_config.ledger if router_config and router_config.ledger else config.open_ledger()
    )
    ledger = TrackingLedger(base_ledger)
    rc = (
        replace(router_config, ledger=ledger)
        if router_config is not None
        else config.router_config(ledger)
    )
    tracer = None
    if rc.tracer_provider is None:  # a caller's own provider wins over the file's
        tracer = server_tracer_provider(config.tracing)
        if tracer is not None:
            rc = replace(rc, tracer_provider=tracer)
    state = _State(
        config=config,
        router=Router(rc),
        ledger=ledger,
        keys=config.api_keys(),
        budgets={t.name: TenantBudget(t.name, t.limit_usd, t.period) for t in config.tenants},
        query_ids=_recorded_prompts(rc),
        revoked=config.revoked_keys(),
        allowed={
            t.name: frozenset(t.allowed_tiers)
            for t in config.tenants
            if t.allowed_tiers is not None
        },
        limiter=_limiter(config),
        routers={
            t.name: Router(replace(rc, tiers=narrowed(rc.tiers, t.allowed_experts)))
            for t in config.tenants
            if t.allowed_experts is not None
        },
    )

    if config_path is not None:

        def apply(keys: dict[str, str], revoked: set[str]) -> None:
            state.keys, state.revoked = keys, revoked

        state.key_file = KeyFile(config_path, set(state.budgets), apply)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for budget in state.budgets.values():
            await state.ledger.set_tenant(budget)
        if state.key_file is not None:
            with suppress(NotImplementedError, RuntimeError, ValueError):  # not main thread
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, state.key_file.poke)
        yield
        await _drain(state)
        if tracer is not None:
            tracer.shutdown()  # flushes the spans still batched

    app = FastAPI(title="corl_graph router", lifespan=lifespan)
    app.state.corl = state
    _add_routes(app, state)
    app.openapi = lambda: server_openapi(app)  # type: ignore[method-assign]
    return app


def _limiter(config: ServerConfig) -> RateLimiter | RedisRateLimiter | None:
    limit = config.rate_limit
    if limit is None:
        return None
    if limit.redis_url:
        return RedisRateLimiter(limit.redis_url, limit.requests_per_s, limit.burst)
    return RateLimiter(limit.requests_per_s, limit.burst)


def narrowed(tiers: TierSet, experts: list[str]) -> TierSet:
    """``tiers`` with each tier's allow-list cut down to ``experts`` (a tenant's)."""
    return TierSet(
        replace(
            t,
            experts=frozenset(experts) & frozenset(t.experts if t.experts is not None else experts),
        )
        for t in tiers.values()
    )


def _router_of(state: _State, tenant: str) -> Router:
    return state.routers.get(tenant, state.router)


def _recorded_prompts(config: RouterConfig) -> dict[str, str]:
    """Prompt -> query id of replayed experts' tables, so that recorded queries sent as plain
    chats find their recordings (a request may also name it: metadata.query_id)."""
    found: dict[str, str] = {}
    for expert in config.experts:
        if isinstance(expert, ReplayExpert):
            for qid, info in expert.table.queries.items():
                if info.prompt:
                    found.setdefault(info.prompt, qid)
    return found


def _add_routes(app: FastAPI, state: _State) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        body = ApiError(exc.status_code, str(exc.detail), type="invalid_request_error", code=code)
        # A 405 keeps its Allow header (RFC 9110): it says which methods the path takes.
        return JSONResponse(
            body.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(LedgerError)
    async def ledger_down(request: Request, exc: LedgerError) -> JSONResponse:
        log.error("ledger unavailable: %s", exc)  # the message names the database: log only
        body = ApiError(
            503,
            "the budget ledger is unavailable; nothing was charged, retry later",
            type="server_error",
            code="ledger_unavailable",
        )
        return JSONResponse(body.body(), status_code=503, headers={"retry-after": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug of ours, never the client's input: logged whole, answered without detail.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        body = ApiError(
            500, "internal error (logged on the server)", type="server_error", code="internal_error"
        )
        return JSONResponse(body.body(), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        # No key needed, so nothing here names the policy, experts, tenants or ledger.
        return {"status": "draining" if state.draining else "ok", "in_flight": len(state.tasks)}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        tenant = await _tenant(request, state)
        data = [
            {
                "id": f"{state.config.model_prefix}{tier}",
                "object": "model",
                "created": 0,
                "owned_by": "corl_graph",
            }
            for tier in _tiers_of(tenant, state)
        ]
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request) -> dict[str, Any]:
        tenant = await _tenant(request, state)
        _tier_of(model_id, state, tenant)  # 404 model_not_found, as for a request
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "corl_graph"}

    @app.get("/v1/budget")
    async def budget(request: Request) -> dict[str, Any]:
        tenant = await _tenant(request, state)
        spend = await state.ledger.tenant_spend(tenant)
        limit = state.budgets[tenant]
        return {
            "tenant": tenant,
            "period": limit.period,
            "limit_usd": limit.limit_usd,
            "committed_usd": spend.committed_usd,
            "settled_usd": spend.settled_usd,
            "held_usd": spend.held_usd,
            "calls": spend.calls,
            "remaining_usd": max(limit.limit_usd - spend.committed_usd, 0.0),
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        tenant = await _tenant(request, state)
        if state.draining:
            raise ApiError(
                503, "the server is shutting down", type="server_error", code="shutting_down"
            )
        chat = parse_request(await _body(request, state.config.max_request_bytes))
        tier = _tier_of(chat.model, state, tenant)
        await _check_tenant_budget(state, tenant)
        result = await _route(state, chat, tier, tenant, _session_of(request))
        stop = chat.stops()
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return StreamingResponse(
                sse_chunks(result, chat.model, include_usage=include_usage, stop=stop),
                media_type="text/event-stream",
            )
        return JSONResponse(completion(result, chat.model, stop))


async def _tenant(request: Request, state: _State) -> str:
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:  # which one would pay? refuse rather than guess
        raise ApiError(
            400,
            "send one Authorization header, not several",
            type="invalid_request_error",
            code="invalid_request",
            param="authorization",
        )
    header = headers[0] if headers else ""
    if state.key_file is not None:
        state.key_file.check()
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "missing API key: send 'Authorization: Bearer <key>'",
            type="invalid_request_error",
            code="invalid_api_key",
        )
    key = key.strip()
    # Compare against every key in constant time, so timing does not reveal a key's prefix.
    owner = None
    for known, tenant in state.keys.items():
        if hmac.compare_digest(known.encode(), key.encode()):
            owner = tenant
    revoked = False
    for known in state.revoked:
        revoked |= hmac.compare_digest(known.encode(), key.encode())
    if revoked:
        raise ApiError(
            401,
            "this API key has been revoked",
            type="invalid_request_error",
            code="invalid_api_key",
        )
    if owner is None:
        raise ApiError(
            401, "incorrect API key", type="invalid_request_error", code="invalid_api_key"
        )
    limiter = state.limiter
    wait = 0.0
    if isinstance(limiter, RedisRateLimiter):  # one bucket across replicas and workers
        wait = await limiter.take(key)
    elif limiter is not None:
        wait = limiter.take(key)
    if limiter is not None and wait > 0:
        raise ApiError(
            429,
            f"rate limit of {limiter.rate:g} requests/s (burst "
            f"{limiter.burst}) reached for this API key; retry in {wait:.2f}s",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": str(max(1, round(wait + 0.5)))},
        )
    return owner


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = ApiError(
        413,
        f"the request body exceeds {limit} bytes",
        type="invalid_request_error",
        code="request_too_large",
    )
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for part in request.stream():  # also bounds chunked bodies with no length
        body += part
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _tiers_of(tenant: str, state: _State) -> list[str]:
    """The tiers a tenant may use, in the configured order."""
    allowed = state.allowed.get(tenant)
    return [t for t in state.router.config.tiers if allowed is None or t in allowed]


def _tier_of(model: str, state: _State, tenant: str) -> str:
    # Only the model name picks the tier, never the messages; a tier the tenant may not use
    # is answered exactly like one that does not exist, so it cannot be discovered.
    prefix = state.config.model_prefix
    tier = model[len(prefix) :] if model.startswith(prefix) else None
    tiers = _tiers_of(tenant, state)
    if tier is None or tier not in tiers:
        names = ", ".join(f"{prefix}{t}" for t in tiers)
        raise ApiError(
            404,
            f"the model {model!r} does not exist; models: {names}",
            type="invalid_request_error",
            code="model_not_found",
            param="model",
        )
    return tier


# Retry-After of a 429 refused while calls in flight hold the budget: about one call's time.
RETRY_HELD_S = 1.0
_EPS = 1e-12


async def _in_flight_usd(state: _State, tenant: str) -> tuple[float, float]:
    """(dollars spent for good: settled + expired, dollars held by calls in flight).

    With budget_hold="leased" the unused room of open budget slices is neither: it is free."""
    spend = await state.ledger.tenant_spend(tenant)
    held = spend.held_usd
    leases = _router_of(state, tenant).config.leases
    if leases is not None:
        held = max(held - leases.open_usd(tenant), 0.0)
    return spend.settled_usd + spend.expired_usd, held


async def _check_tenant_budget(state: _State, tenant: str) -> None:
    """Refuse before routing when the tenant has nothing left (the ledger refuses each call
    anyway; this saves the controller's work and gives a clear 429).

    The rule for every 429 ``budget_exhausted``: final (``x-should-retry: false``) when
    settled and expired spend alone leave no room, since only more budget helps; retryable
    (``x-should-retry: true``, ``Retry-After``) when calls in flight hold the rest, as their
    settles usually free part of what they hold."""
    spent, held = await _in_flight_usd(state, tenant)
    budget = state.budgets[tenant]
    if spent + held >= budget.limit_usd - _EPS:
        raise _exhausted(
            f"tenant {tenant!r} has spent its {budget.period} budget of ${budget.limit_usd:g}",
            spent=spent,
            held=held,
            limit=budget.limit_usd,
        )


def _exhausted(message: str, *, spent: float, held: float, limit: float) -> ApiError:
    if held > _EPS and spent < limit - _EPS:
        return budget_exhausted(
            f"{message}; ${held:.6f} of it is held by calls in flight, retry once they settle",
            retry_after_s=RETRY_HELD_S,
        )
    return budget_exhausted(message)


_SESSION = re.compile(r"[!-~]{1,128}")


def _session_of(request: Request) -> str | None:
    """The ``x-session-id`` header: the trace's ``session.id`` (Phoenix and Langfuse group a
    conversation's traces by it); 1-128 visible ASCII characters."""
    value = request.headers.get("x-session-id")
    if value is None:
        return None
    if not _SESSION.fullmatch(value):
        raise ApiError(
            400,
            "x-session-id must be 1-128 visible ASCII characters",
            type="invalid_request_error",
            code="invalid_request",
            param="x-session-id",
        )
    return value


async def _route(
    state: _State, chat: ChatRequest, tier: str, tenant: str, session_id: str | None = None
) -> RouteResult:
    query = chat.query()
    expert_chat = chat.expert_chat()
    query_id = (chat.metadata or {}).get("query_id") or state.query_ids.get(query)
    task = asyncio.create_task(
        _router_of(state, tenant).arun(
            query,
            tier=tier,
            tenant=tenant,
            query_id=query_id,
            chat=expert_chat,
            session_id=session_id,
        )
    )
    # Tracked so that shutdown can wait for it, and cancel it after the grace period.
    state.tasks.add(task)
    try:
        result = await asyncio.shield(task)
    except ToolsUnsupportedError as exc:
        raise ApiError(
            400,
            _public(str(exc), state),
            type="invalid_request_error",
            code="invalid_request",
            param="tools" if chat.tools else "response_format",
        ) from exc
    except ConfigError as exc:
        raise ApiError(
            400, _public(str(exc), state), type="invalid_request_error", code="invalid_request"
        ) from exc
    except QueryTimeoutError as exc:
        raise ApiError(504, _public(str(exc), state), type="server_error", code="timeout") from exc
    except asyncio.CancelledError:
        raise ApiError(
            503, "the request was cancelled by shutdown", type="server_error", code="shutting_down"
        ) from None
    finally:
        if task.done():
            state.tasks.discard(task)
        else:
            task.add_done_callback(state.tasks.discard)
    result = await _checked(result, state, tenant)
    if expert_chat is not None and expert_chat.wants_tool_call and not result.tool_calls:
        # OpenAI's contract: with "required" or a named function the answer is a tool call.
        raise ApiError(
            502,
            "tool_choice requires a tool call and no expert answered with one",
            type="api_error",
            code="upstream_error",
        )
    return result


async def _checked(result: RouteResult, state: _State, tenant: str) -> RouteResult:
    error: RunError | None = unanswered_error(result)
    if isinstance(error, BudgetExceededError):
        message = _public(str(error), state)
        if error.scope != "tenant":  # the tier's cap: the same request is refused again
            raise budget_exhausted(message)
        spent, held = await _in_flight_usd(state, tenant)
        raise _exhausted(message, spent=spent, held=held, limit=state.budgets[tenant].limit_usd)
    if error is not None:
        log.warning("no answer for tenant %r: %s", tenant, error)
        raise ApiError(502, _public(str(error), state), type="api_error", code="upstream_error")
    return result


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def _public(message: str, state: _State) -> str:
    """``message`` fit for a tenant: no URL (the ledger's database, an expert's endpoint) and
    no ledger file path. The whole message stays in the server's log."""
    url = state.config.ledger_url
    path = url.split("://", 1)[1].lstrip("/") if url.startswith("sqlite:") else ""
    message = _URL.sub("<url>", message)
    if len(path) > 1:
        message = message.replace(path, "<ledger>")
    return message


async def _drain(state: _State) -> None:
    """Stop taking requests, let the running ones finish, then settle what is left."""
    state.draining = True
    grace = state.config.shutdown_grace_s
    pending = set(state.tasks)
    if pending:
        log.info("draining %d in-flight request(s) for up to %.0fs", len(pending), grace)
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
    try:
        # budget_hold="leased": settle the open budget slices at what their queries cost
        for router in (state.router, *state.routers.values()):
            await router.aclose()
    except LedgerError as exc:
        log.warning("budget slices not settled, they stay charged in full: %s", exc)
    settled = await state.ledger.settle_open(reason="server shutdown")
    if settled:
        log.warning(
            "settled %d reservation(s) of cancelled calls at their reserved amount", settled
        )
    await state.ledger.reconcile()
    await state.ledger.aclose()
    if isinstance(state.limiter, RedisRateLimiter):
        await state.limiter.aclose()
