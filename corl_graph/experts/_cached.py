"""A replay cache of every expert reply seen in recorded runs, and an expert that answers
from it, so PPO/GRPO on a company's own traces needs few or no live calls.

Keys are ``(expert, normalised sub-query)``; a second index ``(expert, query_id)`` serves
``match="query"`` (the same semantics as ``ReplayExpert``: the reply recorded for this query,
whatever the controller's wording of the sub-query). On a miss, ``CachedExpert`` either
raises ``ExpertError`` ("not in cache": the graph records a failed call, the controller sees
an error observation) or calls a live expert, reserving and settling every live dollar on a
``Ledger`` under a training tenant so a run can never overspend its training budget::

    sub-query ──► cache hit? ──yes──► recorded text, tokens, cost (no money spent)
                     │no
                     ├─ on_miss="unavailable" ──► ExpertError("not in cache")
                     └─ on_miss="live" ──► ledger.reserve(tenant="training") ──► live call
                                             └─ settle(real cost), reply added to the cache

>>> import asyncio
>>> from corl_graph.experts import ExpertRequest, PriceSheet
>>> cache = ReplayCache()
>>> cache.add(CachedReply("small", "What is 2+2?", "q1", "4", "4", 10, 1, 1e-6))
>>> expert = CachedExpert(cache, "small", PriceSheet(0.1, 0.4))
>>> asyncio.run(expert.agenerate(ExpertRequest("q1", "What is 2+2?", "what is  2+2?"))).text
'4'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from corl_graph._exceptions import BudgetExceededError, ConfigError, DataFormatError, ExpertError
from corl_graph.budget import BudgetTier, Ledger, ReservationRequest
from corl_graph.experts._expert import Expert, ExpertReply, ExpertRequest, PriceSheet

__all__ = [
    "CacheMatch",
    "CachedExpert",
    "CachedReply",
    "OnMiss",
    "ReplayCache",
    "normalize_subquery",
]

OnMiss = Literal["live", "unavailable"]
CacheMatch = Literal["subquery", "query"]
# Live calls during training are charged under this tier: its cap is the per-call ceiling,
# the tenant's period budget is the real training budget.
_TRAINING_TIER = BudgetTier("training", 1e12)


def normalize_subquery(text: str) -> str:
    """Case and whitespace do not change what an expert is asked.

    >>> normalize_subquery("  What IS\\n 2+2? ")
    'what is 2+2?'
    """
    return " ".join(text.lower().split())


@dataclass(frozen=True, slots=True)
class CachedReply:
    """One recorded expert reply: what was asked, what came back, and what it cost."""

    expert: str
    subquery: str
    query_id: str
    text: str
    answer: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    seen: int = 1

    @property
    def key(self) -> tuple[str, str]:
        return (self.expert, normalize_subquery(self.subquery))


class ReplayCache:
    """Expert replies keyed by ``(expert, normalised sub-query)`` and by ``(expert, query_id)``.

    The first reply recorded for a key is kept (later ones only raise ``seen``), so a cache
    rebuilt from the same store is the same cache.
    """

    def __init__(self, replies: Iterable[CachedReply] = ()):
        self._by_subquery: dict[tuple[str, str], CachedReply] = {}
        self._by_query: dict[tuple[str, str], CachedReply] = {}
        for r in replies:
            self.add(r)

    def __len__(self) -> int:
        return len(self._by_subquery)

    def __iter__(self) -> Iterator[CachedReply]:
        return iter(self._by_subquery.values())

    @property
    def experts(self) -> list[str]:
        return sorted({e for e, _ in self._by_subquery})

    def add(self, reply: CachedReply) -> None:
        old = self._by_subquery.get(reply.key)
        kept = reply if old is None else replace(old, seen=old.seen + reply.seen)
        self._by_subquery[reply.key] = kept
        self._by_query.setdefault((reply.expert, reply.query_id), kept)

    def get(
        self, expert: str, subquery: str, query_id: str | None = None, *, match: CacheMatch
    ) -> CachedReply | None:
        """The cached reply for this call, or None (a miss)."""
        hit = self._by_subquery.get((expert, normalize_subquery(subquery)))
        if hit is None and match == "query" and query_id is not None:
            hit = self._by_query.get((expert, query_id))
        return hit

    def has_query(self, expert: str, query_id: str) -> bool:
        return (expert, query_id) in self._by_query

    def save(self, path: str | Path) -> Path:
        """One JSON object per line (``CachedReply`` fields)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as fh:
            for r in self:
                fh.write(json.dumps(asdict(r), separators=(",", ":")) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path) -> ReplayCache:
        src = Path(path)
        if not src.is_file():
            raise ConfigError(
                f"replay cache {str(src)!r} does not exist (run corl-graph traces prepare)"
            )
        replies = []
        with src.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    replies.append(CachedReply(**json.loads(line)))
                except (ValueError, TypeError) as exc:
                    raise DataFormatError(f"{src}:{i}: not a cached reply: {exc}") from exc
        return cls(replies)


class CachedExpert(Expert):
    """An expert that answers from a ``ReplayCache``; on a miss, fails or goes live.

    ``on_miss="live"`` needs ``live`` (the real expert) and ``ledger``: each live call
    reserves its worst case for ``tenant`` first, so the tenant's budget (set with
    ``ledger.set_tenant(TenantBudget("training", limit_usd=..., period="total"))``) bounds
    the live spend of a whole training run; a refused reservation is an ``ExpertError``.
    """

    provider = "cache"

    def __init__(
        self,
        cache: ReplayCache,
        name: str,
        price: PriceSheet | None = None,
        *,
        live: Expert | None = None,
        on_miss: OnMiss = "unavailable",
        ledger: Ledger | None = None,
        tenant: str = "training",
        match: CacheMatch = "subquery",
        description: str = "",
        **limits: Any,
    ):
        if on_miss not in ("live", "unavailable"):
            raise ConfigError(f"on_miss must be 'live' or 'unavailable', got {on_miss!r}")
        if match not in ("subquery", "query"):
            raise ConfigError(f"match must be 'subquery' or 'query', got {match!r}")
        if on_miss == "live" and (live is None or ledger is None):
            raise ConfigError(
                f"CachedExpert {name!r}: on_miss='live' needs live=<the real Expert> and "
                "ledger=<a Ledger with a training tenant budget>; or use on_miss='unavailable'"
            )
        if price is None:
            if live is None:
                raise ConfigError(f"CachedExpert {name!r}: give price= or live=")
            price = live.price
        limits.setdefault("max_retries", 0)  # a miss is deterministic; a retry cannot help
        limits.setdefault("max_output_tokens", _longest(cache, name, live))
        super().__init__(
            name, price, description=description or (live.description if live else ""), **limits
        )
        self.cache, self.live, self.on_miss = cache, live, on_miss
        self.ledger, self.tenant, self.match = ledger, tenant, match
        self.model_name = getattr(live, "model_name", name)
        # misses = live_calls + refused (training budget spent) + live failures, or every
        # miss with on_miss="unavailable"
        self.hits = self.misses = self.live_calls = self.refused = 0
        self.live_usd = 0.0

    def _lookup(self, request: ExpertRequest) -> CachedReply | None:
        return self.cache.get(self.name, request.subquery, request.query_id, match=self.match)

    def worst_case(self, request: ExpertRequest) -> tuple[int, float]:
        hit = self._lookup(request)
        if hit is not None:  # recorded costs can exceed tokens x list price; never under-reserve
            _, usd = super().worst_case(request)
            return hit.input_tokens, max(usd, hit.cost_usd)
        if self.live is not None:
            return self.live.worst_case(request)
        return super().worst_case(request)

    async def agenerate(self, request: ExpertRequest) -> ExpertReply:
        hit = self._lookup(request)
        if hit is not None:
            self.hits += 1
            return ExpertReply(
                text=hit.text,
                input_tokens=hit.input_tokens,
                output_tokens=hit.output_tokens,
                finish_reason="stop",
                response_model=self.model_name,
                answer=hit.answer,
                cost_usd=hit.cost_usd,
            )
        self.misses += 1
        if self.on_miss == "unavailable" or self.live is None:
            raise ExpertError(
                f"not in cache: expert {self.name!r} has no recorded reply to this sub-query "
                f"of query {request.query_id!r} (on_miss='unavailable')",
                expert=self.name,
            )
        return await self._live(request)

    async def _live(self, request: ExpertRequest) -> ExpertReply:
        assert self.live is not None and self.ledger is not None  # checked in __init__
        tokens, worst = self.live.worst_case(request)
        try:
            held = await self.ledger.reserve(
                ReservationRequest(
                    tenant=self.tenant,
                    run_id=f"train:{request.query_id}",
                    tier=_TRAINING_TIER,
                    expert=self.name,
                    amount_usd=worst,
                    input_tokens=tokens,
                    max_output_tokens=self.live.max_output_tokens,
                )
            )
        except BudgetExceededError as exc:
            self.refused += 1
            raise ExpertError(
                f"not in cache and the training budget of tenant {self.tenant!r} is spent: {exc}",
                expert=self.name,
            ) from exc
        try:
            reply = await self.live.agenerate(request)
        except BaseException:
            await self.ledger.release(held.id)
            raise
        usage, reply = self.live.usage_of(reply, tokens, worst)
        await self.ledger.settle(held.id, usage)
        cost = usage.cost_usd
        self.live_calls += 1
        self.live_usd += cost
        self.cache.add(
            CachedReply(
                expert=self.name,
                subquery=request.subquery,
                query_id=request.query_id,
                text=reply.text,
                answer=reply.answer,
                input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens,
                cost_usd=cost,
            )
        )
        return replace(reply, cost_usd=cost)


def _longest(cache: ReplayCache, name: str, live: Expert | None) -> int:
    recorded = max((r.output_tokens for r in cache if r.expert == name), default=1)
    return max(recorded, live.max_output_tokens if live is not None else 1)
