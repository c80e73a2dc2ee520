"""Budget tiers (per-query caps) and tenant budgets (per-period caps)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from corl_graph._exceptions import ConfigError, UnknownTierError

__all__ = ["BudgetTier", "Period", "TenantBudget", "TierSet", "default_tiers", "period_key"]

Period = Literal["day", "month", "total"]


@dataclass(frozen=True, slots=True)
class BudgetTier:
    """A per-query budget: a cap in dollars and optional caps on expert calls and tokens.

    >>> BudgetTier("low", max_usd_per_query=0.002, max_expert_calls=1).name
    'low'
    """

    name: str
    max_usd_per_query: float
    max_expert_calls: int | None = None
    max_tokens_per_query: int | None = None

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
        for field, value in (
            ("max_expert_calls", self.max_expert_calls),
            ("max_tokens_per_query", self.max_tokens_per_query),
        ):
            if value is not None and value < 0:
                raise ConfigError(f"tier {self.name!r}: {field} must be >= 0 or None, got {value}")


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
        if not self.tenant:
            raise ConfigError("tenant name must be non-empty")
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
