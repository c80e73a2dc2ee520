"""RouteLLM-style threshold router: a weak and a strong model, a score, a calibrated threshold."""

from __future__ import annotations

import numpy as np

from corl_graph._exceptions import ConfigError, PolicyError
from corl_graph.policies._base import Decision, PolicyView
from corl_graph.policies._knn import Reserve, affordable, last_reply
from corl_graph.protocol import Answer, CallExpert

__all__ = ["ThresholdRouter"]


class ThresholdRouter:
    """Call ``strong`` when the query's score exceeds ``threshold``, else ``weak``.

    The score is the strong model's expected gain over the weak one, estimated from the
    ``k`` nearest training queries (RouteLLM's similarity-weighted ranking in its simplest
    form). ``calibrate(share)`` sets the threshold so that ``share`` of the training queries
    go to the strong model: RouteLLM's calibration to a target share of expensive calls.

    >>> import numpy as np
    >>> r = ThresholdRouter(np.eye(2), np.array([0.0, 1.0]), "w", "s", k=1).calibrate(0.5)
    >>> r.scores(np.eye(2)).tolist()
    [0.0, 1.0]
    """

    def __init__(
        self,
        index: np.ndarray,
        gain: np.ndarray,
        weak: str,
        strong: str,
        *,
        k: int = 20,
        threshold: float = 0.0,
        share: float | None = None,
        reserve: Reserve | None = None,
    ):
        if index.ndim != 2 or gain.shape != (index.shape[0],):
            raise ConfigError("ThresholdRouter: index (M, E) and gain (M,) must match")
        if k < 1 or weak == strong:
            raise ConfigError("ThresholdRouter: k >= 1 and two different models")
        self.index = index.astype(np.float32)
        self.gain = gain.astype(np.float32)
        self.weak, self.strong = weak, strong
        self.k = min(k, index.shape[0])
        self.threshold = threshold
        self.share = share
        self.reserve = reserve
        label = f"share={share:.2f}" if share is not None else f"t={threshold:.3g}"
        self.name = f"threshold({weak}>{strong},{label})"

    def scores(self, queries: np.ndarray, *, exclude_self: bool = False) -> np.ndarray:
        """Mean gain of the strong model over each query's k nearest neighbours: (B,)."""
        sims = queries @ self.index.T
        if exclude_self:
            np.fill_diagonal(sims, -np.inf)
        top = np.argpartition(-sims, self.k - 1, axis=1)[:, : self.k]
        return np.asarray(self.gain[top].mean(1))

    def calibrate(self, share: float) -> ThresholdRouter:
        """A copy whose threshold sends ``share`` of the training queries to the strong model
        (scores leave each training query out of its own neighbours)."""
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"share must be in [0, 1], got {share!r}")
        train = self.scores(self.index, exclude_self=True)
        # Strictly above the threshold goes strong: the (1 - share) quantile, nudged so that
        # share 0 sends nothing and share 1 sends everything.
        if share <= 0.0:
            threshold = float(train.max()) + 1.0
        elif share >= 1.0:
            threshold = float(train.min()) - 1.0
        else:
            threshold = float(np.quantile(train, 1.0 - share))
        return ThresholdRouter(
            self.index,
            self.gain,
            self.weak,
            self.strong,
            k=self.k,
            threshold=threshold,
            share=share,
            reserve=self.reserve,
        )

    async def decide(self, view: PolicyView) -> Decision:
        if view.calls or view.budget_exhausted:
            return last_reply(view)
        if view.features is None:
            raise PolicyError(f"{self.name} needs the query embedding in features")
        score = float(self.scores(np.asarray(view.features, np.float32)[None, :])[0])
        choice = self.strong if score > self.threshold else self.weak
        for name in (choice, self.weak):
            if affordable(view, name, self.reserve):
                return Decision(CallExpert(name, view.query))
        return Decision(Answer(""))
