"""What the tests that route through the ledger share (per-query envelopes, budget slices):
two fake chat experts, one tier, and a router over a given ledger. Imported by its own unique
name, like ledger_backends."""

from __future__ import annotations

import asyncio
from typing import Any

from corl_graph import ChatModelExpert, PriceSheet, Router, RouterConfig
from corl_graph.budget import BudgetTier, Ledger, TierSet
from corl_graph.policies import AlwaysExpert, Policy
from corl_graph.testing import FakeChatModel

# Worst case of one call: 2 messages of ~30 bytes + 16 each in, 200 out, at these prices.
TIER = BudgetTier("t", max_usd_per_query=0.01, max_expert_calls=3)
TIERS = TierSet([TIER])


def two_experts(delay_s: float = 0.0) -> list[ChatModelExpert]:
    """Experts "a" and "b": 100 tokens in, 20 out, $1 / $10 per million, answers "4"."""
    return [
        ChatModelExpert(
            name,
            FakeChatModel(reply, input_tokens=100, output_tokens=20, delay_s=delay_s),
            PriceSheet(1.0, 10.0),
            max_output_tokens=200,
            timeout_s=5.0,
            retry_backoff_s=0.0,
        )
        for name, reply in (("a", "It is 4"), ("b", "The answer is 4"))
    ]


def router_over(ledger: Ledger, policy: Policy | None = None, **config: Any) -> Router:
    """A router on TIER asking both experts (unless ``policy``); ``config``: more
    RouterConfig fields, ``experts`` included."""
    return Router(
        RouterConfig(
            experts=config.pop("experts", None) or two_experts(),
            policy=policy or AlwaysExpert(["a", "b"]),
            tiers=TIERS,
            default_tier="t",
            ledger=ledger,
            **config,
        )
    )


async def started_calling(ledger: Ledger, tenant: str = "default") -> None:
    """Wait until a run holds money on ``ledger`` (its first call is under way), then a little
    longer, so that the run is inside the expert call: a fixed sleep is too short for a slow
    PostgreSQL on a loaded machine, and a run cancelled before its call has charged nothing."""
    for _ in range(1000):
        if (await ledger.tenant_spend(tenant)).held_usd > 0:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
