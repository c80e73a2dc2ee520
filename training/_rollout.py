"""Rollouts through the routing graph and their conversion to padded training tensors.

Episodes run through the same ``Router`` (LangGraph graph, ledger, replayed or live experts)
that serves users; the controller is an ``HFPolicy``. Each episode's tier is drawn at random,
so one model sees, and learns, every budget token.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from corl_graph._exceptions import ConfigError
from corl_graph.budget import TierSet
from corl_graph.experts import OutcomeTable
from corl_graph.graph import Router
from corl_graph.trajectories import Trajectory

from ._rewards import RewardBreakdown, RewardFn

__all__ = ["Episode", "QuerySpec", "RolloutBatch", "build_batch", "collect", "load_queries"]

_QUESTION = re.compile(r"##\s*Question:\s*(.*?)\s*(?:##\s*Instruction|\Z)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """A training query: the id replayed experts key on, its text and the gold answer."""

    query_id: str
    text: str
    reference: str | None


@dataclass(frozen=True, slots=True)
class Episode:
    """One graph run with its tier and reward."""

    trajectory: Trajectory
    reference: str | None
    tier: str
    reward: RewardBreakdown


def load_queries(
    table: OutcomeTable, split: str, *, field: str = "prompt", limit: int | None = None
) -> list[QuerySpec]:
    """Queries of a split. ``field="question"`` keeps only the question of a prompt that has a
    ``## Question:`` section (shorter contexts for small controllers)."""
    specs = []
    for q in table.split(split):  # type: ignore[arg-type]
        if not q.prompt:
            continue
        text = q.prompt
        if field == "question" and (m := _QUESTION.search(text)):
            text = m.group(1).strip()
        specs.append(QuerySpec(q.query_id, text, q.reference))
    if not specs:
        raise ConfigError(f"table {table.name!r} has no {split} queries with a prompt")
    return specs[:limit] if limit else specs


async def collect(
    router: Router,
    queries: Sequence[QuerySpec],
    tiers: TierSet,
    reward_fn: RewardFn,
    rng: random.Random,
) -> list[Episode]:
    """Run one episode per query, concurrently, each under a uniformly drawn tier."""
    names = list(tiers)
    drawn = [rng.choice(names) for _ in queries]
    results = await asyncio.gather(
        *(
            router.arun(q.text, tier=t, query_id=q.query_id)
            for q, t in zip(queries, drawn, strict=True)
        )
    )
    return [
        Episode(r.trajectory, q.reference, t, reward_fn(r.trajectory, q.reference, tiers[t]))
        for q, t, r in zip(queries, drawn, results, strict=True)
    ]


@dataclass(slots=True)
class RolloutBatch:
    """Right-padded tensors of a set of episodes.

    ``action_mask[b, t] = 1`` when token ``t + 1`` of row ``b`` was written by the controller
    (it is the trajectory's loss mask shifted by one, as logits at ``t`` predict ``t + 1``).
    """

    input_ids: torch.Tensor  # (B, L) long
    attention_mask: torch.Tensor  # (B, L) long
    action_mask: torch.Tensor  # (B, L - 1) float
    scores: torch.Tensor  # (B,) float
    tiers: list[str]
    truncated: int = 0

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def rows(self, index: torch.Tensor | slice) -> RolloutBatch:
        """A subset of rows, trimmed to its own longest sequence."""
        attn = self.attention_mask[index]
        length = max(int(attn.sum(1).max()), 2)
        idx = index.tolist() if isinstance(index, torch.Tensor) else range(len(self))[index]
        return RolloutBatch(
            self.input_ids[index][:, :length],
            attn[:, :length],
            self.action_mask[index][:, : length - 1],
            self.scores[index],
            [self.tiers[i] for i in idx],
        )


def build_batch(
    episodes: Sequence[Episode],
    *,
    pad_id: int,
    max_len: int,
    scores: Sequence[float] | None = None,
) -> RolloutBatch:
    """Pad the episodes' token ids and masks. A run longer than ``max_len`` keeps its row (so
    ranks stay in step) but gets an all-zero action mask: it is not trained on. ``scores``
    (default: each episode's reward) are the scalars trained on, e.g. Lagrangian-shaped."""
    seqs = [list(e.trajectory.token_ids) for e in episodes]
    masks = [list(e.trajectory.loss_mask) for e in episodes]
    if any(not s for s in seqs):
        raise ConfigError(
            "an episode has no token ids: the policy must record its tokens (HFPolicy)"
        )
    L = max(2, min(max(len(s) for s in seqs), max_len))
    B = len(seqs)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    loss_mask = torch.zeros((B, L), dtype=torch.float32)
    truncated = 0
    for i, (s, m) in enumerate(zip(seqs, masks, strict=True)):
        n = min(len(s), L)
        ids[i, :n] = torch.tensor(s[:n])
        attn[i, :n] = 1
        if len(s) > L:
            truncated += 1
            continue
        loss_mask[i, :n] = torch.tensor(m, dtype=torch.float32)
    if scores is None:
        scores = [e.reward.reward for e in episodes]
    if len(scores) != B:
        raise ConfigError(f"build_batch: {len(scores)} scores for {B} episodes")
    return RolloutBatch(
        ids,
        attn,
        loss_mask[:, 1:].contiguous(),
        torch.tensor(list(scores), dtype=torch.float32),
        [e.tier for e in episodes],
        truncated,
    )
