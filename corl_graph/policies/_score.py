"""One-call routers over a learned per-model correctness predictor (numpy at inference):
kNN over embeddings, an MLP, and RouteLLM-style matrix factorisation. Each predicts, per
query, the probability that each expert answers correctly; the router calls the expert with
the best ``estimate - cost_weight * cost / priciest cost`` among those it can afford.

>>> import numpy as np
>>> p = MLPPredictor({"w1": np.zeros((2, 3)), "b1": np.zeros(3), "w2": np.zeros((3, 2)),
...                   "b2": np.array([0.0, 2.0])})
>>> r = ScoreRouter(p, ["cheap", "big"], [1.0, 10.0], cost_weight=0.0)
>>> [int(i) for i in r.choose(np.zeros((1, 2)))]
[1]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from corl_graph._exceptions import ConfigError
from corl_graph.policies._base import Decision, PolicyView
from corl_graph.policies._knn import Reserve, one_call_decision, pick_by_score

__all__ = ["KNNPredictor", "MFPredictor", "MLPPredictor", "Predictor", "ScoreRouter"]


class Predictor(Protocol):
    """Per-expert correctness estimates for a batch of query embeddings: (B, E) -> (B, K)."""

    name: str

    def predict(self, emb: np.ndarray) -> np.ndarray: ...


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))))


class KNNPredictor:
    """Mean correctness of the ``k`` nearest training queries (cosine on unit vectors)."""

    def __init__(self, index: np.ndarray, correct: np.ndarray, k: int):
        if index.ndim != 2 or correct.shape[0] != index.shape[0] or k < 1:
            raise ConfigError("KNNPredictor: index (M, E), correct (M, K) and k >= 1")
        self.index = index.astype(np.float32)
        self.correct = correct.astype(np.float64)
        self.k = min(k, len(index))
        self.name = f"knn(k={self.k})"

    def predict(self, emb: np.ndarray) -> np.ndarray:
        sims = emb @ self.index.T
        top = np.argpartition(-sims, self.k - 1, axis=1)[:, : self.k]
        return np.asarray(self.correct[top].mean(1))


class MLPPredictor:
    """One hidden layer (ReLU), one sigmoid output per expert: (B, E) -> (B, K)."""

    def __init__(self, params: Mapping[str, np.ndarray]):
        self.params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        self.name = "mlp"

    def predict(self, emb: np.ndarray) -> np.ndarray:
        p = self.params
        h = np.maximum(emb @ p["w1"] + p["b1"], 0.0)
        return _sigmoid(h @ p["w2"] + p["b2"])


class MFPredictor:
    """RouteLLM's matrix factorisation: ``sigmoid(w . (v_m * (P q)) + b_m)``, a learned
    model embedding ``v_m`` per expert and a projection ``P`` of the query embedding."""

    def __init__(self, params: Mapping[str, np.ndarray]):
        self.params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        self.name = "mf"

    def predict(self, emb: np.ndarray) -> np.ndarray:
        p = self.params
        q = emb @ p["proj"]  # (B, D)
        return _sigmoid((q * p["w"]) @ p["models"].T + p["bias"])  # (B, K)


class ScoreRouter:
    """Call the expert with the best predicted correctness minus ``cost_weight`` x its
    normalised mean cost, among those whose call fits the remaining cap; then answer."""

    def __init__(
        self,
        predictor: Predictor,
        experts: Sequence[str],
        mean_cost_usd: Sequence[float] | np.ndarray,
        *,
        cost_weight: float = 0.0,
        reserve: Reserve | None = None,
        name: str | None = None,
    ):
        if len(experts) != len(mean_cost_usd) or not experts:
            raise ConfigError("ScoreRouter: one mean cost per expert, at least one expert")
        self.predictor = predictor
        self.experts = list(experts)
        cost = np.asarray(mean_cost_usd, dtype=np.float64)
        self.cost_norm = cost / max(float(cost.max()), 1e-18)
        self.cost_weight = cost_weight
        self.reserve = reserve
        self.name = name or f"{predictor.name}(lambda={cost_weight:.3g})"

    def with_cost_weight(self, cost_weight: float) -> ScoreRouter:
        return ScoreRouter(
            self.predictor, self.experts, self.cost_norm, cost_weight=cost_weight,
            reserve=self.reserve,
        )  # fmt: skip

    def choose(self, emb: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        return pick_by_score(self.predictor.predict(emb), self.cost_weight, self.cost_norm, allowed)

    async def decide(self, view: PolicyView) -> Decision:
        return one_call_decision(view, self.name, self.experts, self.reserve, self.choose)
