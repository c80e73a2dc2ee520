"""kNN router over query embeddings: the neighbours' accuracy per expert, minus a cost penalty."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from corl_graph._exceptions import ConfigError, PolicyError
from corl_graph.policies._base import Decision, PolicyView
from corl_graph.protocol import Answer, CallExpert, ExpertDescriptor

__all__ = ["KNNRouter", "Reserve", "affordable", "last_reply", "worst_case_estimate"]

# What a call to an expert would reserve, when the router is told (replayed experts know it
# exactly); without it routers use ``worst_case_estimate``.
Reserve = Callable[[PolicyView, str], float]


def worst_case_estimate(view: PolicyView, expert: ExpertDescriptor) -> float:
    """What a call may reserve, estimated from the query length (about 4 bytes a token) and
    the expert's reply limit. Routers skip experts whose estimate exceeds the remaining cap."""
    tokens = math.ceil(len(view.query.encode("utf-8")) / 4) + 16
    return (
        tokens * expert.input_usd_per_mtok + expert.max_output_tokens * expert.output_usd_per_mtok
    ) / 1e6


def affordable(view: PolicyView, name: str, reserve: Reserve | None = None) -> bool:
    """Whether a call to ``name`` fits what is left of the cap (a refused call would end
    the run with nothing)."""
    try:
        descriptor = view.expert(name)
    except KeyError:
        return False
    need = reserve(view, name) if reserve else worst_case_estimate(view, descriptor)
    return not view.budget_exhausted and need <= view.remaining_usd


def pick_by_score(
    score: np.ndarray, cost_weight: float, cost_norm: np.ndarray, allowed: np.ndarray | None
) -> np.ndarray:
    """Per row, the allowed expert maximising ``score - cost_weight * cost_norm``."""
    score = score - cost_weight * cost_norm[None, :]
    if allowed is not None:
        score = np.where(allowed, score, -np.inf)
    return np.asarray(score.argmax(1))


def one_call_decision(
    view: PolicyView,
    name: str,
    experts: Sequence[str],
    reserve: Reserve | None,
    choose: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> Decision:
    """A one-call router's step: after its call, answer with the reply; before it, call the
    expert ``choose(embedding, affordable)`` picks, or answer empty when none is affordable."""
    if view.calls or view.budget_exhausted:
        return last_reply(view)
    if view.features is None:
        raise PolicyError(f"{name} needs the query embedding in features")
    allowed = np.array([[affordable(view, e, reserve) for e in experts]])
    if not allowed.any():
        return Decision(Answer(""))
    emb = np.asarray(view.features, np.float32)[None, :]
    return Decision(CallExpert(experts[int(choose(emb, allowed)[0])], view.query))


def last_reply(view: PolicyView) -> Decision:
    """Answer with the last reply: its extracted answer, else its text."""
    for c in reversed(view.calls):
        if c.status in ("ok", "truncated") and (c.answer or c.text):
            return Decision(Answer(c.answer if c.answer is not None else c.text))
    return Decision(Answer(""))


class KNNRouter:
    """Route each query to one expert: argmax over experts of the mean correctness of its
    ``k`` nearest training queries minus ``cost_weight`` x the expert's cost / the priciest
    expert's cost. Needs the query embedding in ``view.features``.

    >>> import numpy as np
    >>> r = KNNRouter(np.eye(2), np.array([[1.0, 1.0], [0.0, 1.0]]), ["s", "b"], [1.0, 10.0], k=1)
    >>> [int(i) for i in r.choose(np.array([[1.0, 0.0], [0.0, 1.0]]))]
    [0, 1]
    """

    def __init__(
        self,
        index: np.ndarray,
        correct: np.ndarray,
        experts: Sequence[str],
        mean_cost_usd: Sequence[float],
        *,
        k: int = 20,
        cost_weight: float = 0.0,
        name: str | None = None,
        reserve: Reserve | None = None,
    ):
        if index.ndim != 2 or correct.shape != (index.shape[0], len(experts)):
            raise ConfigError("KNNRouter: index (M, E) and correct (M, K) must match the experts")
        if len(mean_cost_usd) != len(experts) or k < 1:
            raise ConfigError("KNNRouter: one mean cost per expert, and k >= 1")
        self.index = index.astype(np.float32)
        self.correct = correct.astype(np.float32)
        self.experts = list(experts)
        cost = np.asarray(mean_cost_usd, dtype=np.float64)
        self.cost_norm = cost / max(cost.max(), 1e-18)
        self.k = min(k, index.shape[0])
        self.cost_weight = cost_weight
        self.reserve = reserve
        self.name = name or f"knn(k={self.k},lambda={cost_weight:.3g})"

    def with_cost_weight(self, cost_weight: float) -> KNNRouter:
        return KNNRouter(
            self.index,
            self.correct,
            self.experts,
            self.cost_norm,
            k=self.k,
            cost_weight=cost_weight,
            reserve=self.reserve,
        )

    def neighbour_accuracy(self, queries: np.ndarray, *, exclude_self: bool = False) -> np.ndarray:
        """Mean correctness per expert over each query's k nearest neighbours: (B, K)."""
        sims = queries @ self.index.T  # (B, M)
        if exclude_self:  # leave-one-out on the index itself
            np.fill_diagonal(sims, -np.inf)
        top = np.argpartition(-sims, self.k - 1, axis=1)[:, : self.k]
        return np.asarray(self.correct[top].mean(1))

    def choose(
        self, queries: np.ndarray, allowed: np.ndarray | None = None, *, exclude_self: bool = False
    ) -> np.ndarray:
        score = self.neighbour_accuracy(queries, exclude_self=exclude_self)
        return pick_by_score(score, self.cost_weight, self.cost_norm, allowed)

    async def decide(self, view: PolicyView) -> Decision:
        return one_call_decision(view, self.name, self.experts, self.reserve, self.choose)
