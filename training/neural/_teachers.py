"""Fixed teacher policies, run in the simulator, for behaviour cloning the neural router.

A teacher is an agreement cascade over a subset of the pool, cheapest first: call the next
affordable expert of the subset until ``agree`` answers coincide, then vote (or answer with
the single reply). A one-expert subset with ``agree=1`` is "always that expert"; over all
subsets that includes the per-query oracle's single call restricted to the tier's cap.

Teachers act on ``StepBatch`` arrays, vectorised over episodes, so thousands of them run in
the same ``ReplaySim`` the policy trains in, and every action they take is one the policy's
``action_mask`` allows (a cloned action is always a legal one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from itertools import combinations
from typing import Literal

import numpy as np

from corl_graph._exceptions import ConfigError
from corl_graph.evaluation import run_episodes
from corl_graph.policies import StepBatch, action_mask, plurality

from .._rewards import cost_weighted_reward
from ._env import Env

__all__ = ["TeacherBank", "assign_teachers", "teacher_act", "teacher_bank", "teacher_rewards"]

TeacherMode = Literal["fixed", "per_query"]


@dataclass(frozen=True)
class TeacherBank:
    """M teachers: expert orders (M, K) padded with -1, and agreement thresholds (M,)."""

    orders: np.ndarray
    agree: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.agree)


def teacher_bank(experts: Sequence[str], agrees: Sequence[int] = (2, 3)) -> TeacherBank:
    """Every single expert (agree 1) and every cascade over a subset of two or more experts,
    in pool order (cheapest first), for each agreement threshold the subset can reach."""
    k = len(experts)
    rows: list[tuple[tuple[int, ...], int]] = [((j,), 1) for j in range(k)]
    for size in range(2, k + 1):
        for subset in combinations(range(k), size):
            rows += [(subset, a) for a in agrees if a <= size]
    orders = np.full((len(rows), k), -1, np.int64)
    for i, (subset, _) in enumerate(rows):
        orders[i, : len(subset)] = subset
    names = tuple(
        f"cascade({'>'.join(experts[j] for j in s)},agree={a})"
        if len(s) > 1
        else f"always({experts[s[0]]})"
        for s, a in rows
    )
    return TeacherBank(orders, np.array([a for _, a in rows], np.int64), names)


def teacher_act(bank: TeacherBank, teacher: np.ndarray, s: StepBatch) -> np.ndarray:
    """Each episode's teacher's action: (B,) int, always allowed by ``action_mask``."""
    b, k = s.called.shape
    rows = np.arange(b)
    allowed = action_mask(s)
    _, top_count = plurality(s.answer_id)
    n_answers = (s.answer_id >= 0).sum(1)
    order = bank.orders[teacher]  # (B, K)
    candidate = (order >= 0) & allowed[rows[:, None], 1 + order.clip(0)]
    nxt = order[rows, candidate.argmax(1)]
    stop = (top_count >= bank.agree[teacher]) | ~candidate.any(1)
    finish = np.where(n_answers >= 2, k + 1, 0)
    act = np.where(stop, finish, nxt + 1)
    # Nothing left to try and nothing to answer with (e.g. its one expert was refused):
    # the first allowed action, i.e. the cheapest affordable call.
    legal = allowed[rows, act]
    return np.where(legal, act, allowed.argmax(1))


def teacher_rewards(bank: TeacherBank, env: Env) -> tuple[np.ndarray, np.ndarray]:
    """Correctness and cost of every teacher on every query at every tier: (T, M, N) each."""
    n, m, t = len(env.emb), len(bank), len(env.caps)
    correct = np.zeros((t, m, n))
    cost = np.zeros((t, m, n))
    teacher = np.repeat(np.arange(m), n)
    rows = np.tile(np.arange(n), m)
    for tier in range(t):
        sim = env.sim(rows, np.full(m * n, tier), np.zeros(m * n))

        def act(s: StepBatch) -> np.ndarray:
            return teacher_act(bank, teacher, s)

        run_episodes(act, sim)
        correct[tier] = sim.correct.reshape(m, n)
        cost[tier] = sim.s.spent.reshape(m, n)
    return correct, cost


def assign_teachers(
    correct: np.ndarray,
    cost: np.ndarray,
    rows: np.ndarray,
    tier: np.ndarray,
    log_w: np.ndarray,
    cost_ref: float,
    mode: TeacherMode = "fixed",
) -> np.ndarray:
    """The teacher each episode imitates: (B,) index into the bank.

    ``fixed``: the teacher with the best mean reward (``cost_weighted_reward``: correct
    minus ``w * cost / cost_ref``; teachers run under the simulator's cap, so its gate is 1)
    over the training queries at the episode's tier and cost weight (one cascade per
    operating point, which generalises). ``per_query``: the best teacher on the episode's
    own query, ties going to the fixed choice (hindsight labels: the oracle, allowed on
    train only)."""
    w = np.exp(log_w)[:, None]  # (B, 1)
    reward = partial(cost_weighted_reward, budget_usd=np.inf, weight=w, cost_ref_usd=cost_ref)
    mean_score = reward(correct.mean(2)[tier], cost.mean(2)[tier])  # (B, M)
    if mode == "fixed":
        return np.asarray(mean_score.argmax(1))
    if mode != "per_query":
        raise ConfigError(f"teacher mode must be 'fixed' or 'per_query', got {mode!r}")
    own = reward(correct[tier, :, rows], cost[tier, :, rows])  # (B, M)
    return np.asarray((own + 1e-3 * mean_score).argmax(1))
