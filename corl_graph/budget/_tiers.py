"""Budget tiers (per-query caps) and tenant budgets (per-period caps)."""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from corl_graph._exceptions import ConfigError, UnknownTierError
from corl_graph.budget._checks import check_id

__all__ = ["BudgetTier", "Period", "TenantBudget", "TierSet", "default_tiers", "period_key"]

Period = Literal["day", "month", "total"]


@dataclass(frozen=True, slots=True)
class BudgetTier:
    """A per-query budget: a hard cap in dollars, optional caps on expert calls and tokens,
    and an optional spend target.

    The cap (``max_usd_per_query``) is enforced by the ledger before money is spent: no query
    of the tier ever costs more. The target (``target_usd_per_query``) is the *mean* spend
    per query the tier should average; nothing enforces it at run time. Training treats it as
    a constraint, ``E[cost | tier] <= target``, with one Lagrange multiplier per tier
    (``corl_graph.training.TierMultipliers``). With caps alone the strongest affordable
    expert is always the best choice and tiers cannot differ; targets make a lower tier spend
    less on average. ``target_usd`` is the target, or the cap when none is set.

    >>> BudgetTier("low", max_usd_per_query=0.002, max_expert_calls=1).name
    'low'
    >>> BudgetTier("low", 0.002, target_usd_per_query=5e-4).target_usd
    0.0005

    ``experts`` names the experts a query of the tier may reach at all (None: every expert).
    It bounds what a controller can be talked into: prompt injection through an LLM
    controller can make it *ask* for any expert, and a call outside this set is denied
    before anything is reserved or sent (docs/reliability.md, "Prompt injection").

    >>> BudgetTier("low", 0.002, experts=["small"]).allows("big")
    False
    """

    name: str
    max_usd_per_query: float
    max_expert_calls: int | None = None
    max_tokens_per_query: int | None = None
    target_usd_per_query: float | None = None
    experts: Collection[str] | None = None  # stored as a frozenset

    def allows(self, expert: str) -> bool:
        """Whether a query of this tier may call ``expert`` at all."""
        return self.experts is None or expert in self.experts

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(
                f"tier name {self.name!r} must be non-empty letters, digits, '-' or '_' "
                "(it appears in the prompt as <budget:NAME>)"
            )
        if not math.isfinite(self.max_usd_per_query) or self.max_usd_per_query < 0:
            raise ConfigError(
                f"tier {self.name!r}: max_usd_per_query must be a finite number >= 0, "
                f"got {self.max_usd_per_query!r}"
            )
        target = self.target_usd_per_query
        if target is not None and (
            not math.isfinite(target) or not 0 < target <= self.max_usd_per_query
        ):
            raise ConfigError(
                f"tier {self.name!r}: target_usd_per_query must be a finite number in "
                f"(0, max_usd_per_query={self.max_usd_per_query}], got {target!r} (the target "
                "is the mean spend per query; the cap is the most one query may spend)"
            )
        if self.experts is not None:
            if isinstance(self.experts, str):
                raise ConfigError(
                    f"tier {self.name!r}: experts must be a collection of names, "
                    f"not the string {self.experts!r}"
                )
            object.__setattr__(self, "experts", frozenset(self.experts))
        for field, value in (
            ("max_expert_calls", self.max_expert_calls),
            ("max_tokens_per_query", self.max_tokens_per_query),
        ):
            if value is not None and value < 0:
                raise ConfigError(f"tier {self.name!r}: {field} must be >= 0 or None, got {value}")

    @property
    def target_usd(self) -> float:
        """The mean spend per query this tier aims at: the target, else the cap."""
        if self.target_usd_per_query is not None:
            return self.target_usd_per_query
        return self.max_usd_per_query

    def remaining_usd(self, spent_usd: float) -> float:
        """What a query that has spent ``spent_usd`` may still spend under the cap (>= 0).

        >>> BudgetTier("low", 0.002).remaining_usd(0.0015)
        0.0005
        """
        return max(self.max_usd_per_query - spent_usd, 0.0)


class TierSet(Mapping[str, BudgetTier]):
    """An ordered set of tiers, cheapest first, looked up by name.

    >>> tiers = default_tiers()
    >>> list(tiers)
    ['low', 'medium', 'high']
    >>> tiers["low"].max_usd_per_query
    0.002
    """

    def __init__(self, tiers: Iterable[BudgetTier]):
        self._tiers: dict[str, BudgetTier] = {}
        for tier in tiers:
            if tier.name in self._tiers:
                raise ConfigError(f"tier {tier.name!r} is defined twice")
            self._tiers[tier.name] = tier
        if not self._tiers:
            raise ConfigError("a TierSet needs at least one tier, e.g. BudgetTier('low', 0.002)")

    def __getitem__(self, name: str) -> BudgetTier:
        try:
            return self._tiers[name]
        except KeyError:
            raise UnknownTierError(
                f"unknown budget tier {name!r}; configured tiers: {', '.join(self._tiers)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tiers)

    def __len__(self) -> int:
        return len(self._tiers)

    def __repr__(self) -> str:
        return f"TierSet({list(self._tiers.values())!r})"


def default_tiers() -> TierSet:
    """low / medium / high with caps that suit mid-priced hosted models."""
    return TierSet(
        [
            BudgetTier("low", max_usd_per_query=0.002),
            BudgetTier("medium", max_usd_per_query=0.01),
            BudgetTier("high", max_usd_per_query=0.05),
        ]
    )


@dataclass(frozen=True, slots=True)
class TenantBudget:
    """A tenant's spending limit for a period: per UTC day, per UTC month, or in total.

    >>> TenantBudget("acme", limit_usd=100.0, period="month").period
    'month'
    """

    tenant: str
    limit_usd: float
    period: Period = "month"

    def __post_init__(self) -> None:
        check_id(self.tenant, "tenant name")
        if not math.isfinite(self.limit_usd) or self.limit_usd < 0:
            raise ConfigError(
                f"tenant {self.tenant!r}: limit_usd must be a finite number >= 0, "
                f"got {self.limit_usd!r} (use a large number for 'practically unlimited')"
            )
        if self.period not in ("day", "month", "total"):
            raise ConfigError(
                f"tenant {self.tenant!r}: period must be 'day', 'month' or 'total', "
                f"got {self.period!r}"
            )


def period_key(period: Period, at: float | None = None) -> str:
    """The bucket a spend at time ``at`` (epoch seconds, UTC) falls into.

    >>> period_key("day", 0.0), period_key("month", 0.0), period_key("total", 0.0)
    ('1970-01-01', '1970-01', 'total')
    """
    if period == "total":
        return "total"
    moment = time.gmtime(time.time() if at is None else at)
    return time.strftime("%Y-%m-%d" if period == "day" else "%Y-%m", moment)
