"""Fitting the correctness predictors of the one-call baselines on a table's train split
(numpy only): kNN with k chosen by 5-fold cross-validation, an MLP, and RouteLLM-style
matrix factorisation, the last two trained by Adam on the binary cross-entropy with early
stopping on a held-out tenth of train. ``calibrate_weight`` picks a tier's cost weight on
train from out-of-fold estimates: the cheapest weight within 0.5 points of the best train
accuracy among those whose choice stays within the tier's cap and mean-spend target."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from corl_graph.policies import KNNPredictor, MFPredictor, MLPPredictor, Predictor

# A forward pass: params, inputs -> (outputs, backward: d loss / d logits -> gradients)
Backward = Callable[[np.ndarray], dict[str, np.ndarray]]
Forward = Callable[[dict[str, np.ndarray], np.ndarray], tuple[np.ndarray, Backward]]

__all__ = [
    "LAMBDAS",
    "calibrate_weight",
    "choose_knn",
    "fit_mf",
    "fit_mlp",
    "one_call",
    "out_of_fold",
]

# The cost-weight sweep: 0, then 23 values from 1e-3 to 10 (24 points).
LAMBDAS = (0.0, *(float(x) for x in np.geomspace(1e-3, 10.0, 23)))
KNN_KS = (5, 10, 20, 40, 80)


def folds_of(n: int, k: int, seed: int) -> np.ndarray:
    fold = np.arange(n) % k
    np.random.default_rng(seed).shuffle(fold)
    return fold


def out_of_fold(
    fit: Callable[[np.ndarray, np.ndarray], Predictor],
    emb: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
) -> np.ndarray:
    """Each train query's estimates from a predictor fitted without its fold: (N, K)."""
    out = np.zeros_like(y, dtype=np.float64)
    for f in np.unique(fold):
        tr = fold != f
        out[~tr] = fit(emb[tr], y[tr]).predict(emb[~tr])
    return out


def one_call(
    est: np.ndarray, judged: np.ndarray, cost: np.ndarray, allowed: np.ndarray, w: float,
    cost_norm: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The one-call router's choice per query and its correctness and cost: (N,) x 3."""
    score = np.where(allowed, est - w * cost_norm[None, :], -np.inf)
    choice = score.argmax(1)
    rows = np.arange(len(est))
    return choice, judged[rows, choice], cost[rows, choice]


def _aiq_of(points: list[tuple[float, float]], lo: float, hi: float) -> float:
    from corl_graph.evaluation._metrics import aiq

    return aiq(points, c_min=lo, c_max=hi) if hi > lo else 0.0


def choose_knn(
    emb: np.ndarray, judged: np.ndarray, cost: np.ndarray, allowed: np.ndarray, seed: int = 0
) -> tuple[int, np.ndarray]:
    """k for the kNN router by 5-fold cross-validation on train: the k whose out-of-fold
    lambda sweep has the largest AIQ. Returns k and its out-of-fold estimates."""
    fold = folds_of(len(emb), 5, seed)
    mean_cost = cost.mean(0)
    norm = mean_cost / max(float(mean_cost.max()), 1e-18)
    best: tuple[float, int, np.ndarray] | None = None
    for k in KNN_KS:
        est = out_of_fold(partial(KNNPredictor, k=k), emb, judged, fold)
        pts = []
        for w in LAMBDAS:
            _, ok, c = one_call(est, judged, cost, allowed, w, norm)
            pts.append((float(c.mean()), float(ok.mean())))
        score = _aiq_of(pts, float(mean_cost.min()), float(mean_cost.max()))
        if best is None or score > best[0] + 1e-9:
            best = (score, k, est)
    assert best is not None
    return best[1], best[2]


def calibrate_weight(
    est: np.ndarray,
    judged: np.ndarray,
    cost: np.ndarray,
    worst: np.ndarray,
    cap: float,
    target: float | None,
    *,
    tolerance: float = 0.005,
) -> float:
    """A tier's cost weight from out-of-fold estimates (module docstring)."""
    allowed = worst <= cap
    mean_cost = cost.mean(0)
    norm = mean_cost / max(float(mean_cost.max()), 1e-18)
    results = []
    for w in LAMBDAS:
        _, ok, c = one_call(est, judged, cost, allowed, w, norm)
        if target is None or c.mean() <= target:
            results.append((w, float(ok.mean()), float(c.mean())))
    if not results:
        return LAMBDAS[-1]
    best = max(acc for _, acc, _ in results)
    return min((c, w) for w, acc, c in results if acc >= best - tolerance)[1]


class _Adam:
    def __init__(self, params: dict[str, np.ndarray], lr: float):
        self.p, self.lr, self.t = params, lr, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        for k, g in grads.items():
            self.m[k] = 0.9 * self.m[k] + 0.1 * g
            self.v[k] = 0.999 * self.v[k] + 0.001 * g * g
            mh = self.m[k] / (1 - 0.9**self.t)
            vh = self.v[k] / (1 - 0.999**self.t)
            self.p[k] -= self.lr * mh / (np.sqrt(vh) + 1e-8)


def _bce(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _train(
    params: dict[str, np.ndarray],
    forward: Forward,
    emb: np.ndarray,
    y: np.ndarray,
    seed: int,
    *,
    epochs: int = 200,
    lr: float = 3e-3,
    decay: float = 1e-4,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Full-batch Adam on the BCE with weight decay; the epoch with the best held-out BCE
    (a tenth of the data) is kept, then returned."""
    rng = np.random.default_rng(seed)
    held = rng.random(len(emb)) < 0.1
    if held.sum() < 5 or (~held).sum() < 5:
        held = np.zeros(len(emb), bool)
    tr = ~held
    opt = _Adam(params, lr)
    best = (np.inf, {k: v.copy() for k, v in params.items()})
    for epoch in range(epochs):
        p, backward = forward(params, emb[tr])
        grads = backward((p - y[tr]) / tr.sum())
        opt.step({k: g + decay * params[k] for k, g in grads.items()})
        if held.any() and epoch % 5 == 4:
            loss = _bce(forward(params, emb[held])[0], y[held])
            if loss < best[0]:
                best = (loss, {k: v.copy() for k, v in params.items()})
    return best[1] if held.any() else params


def _f32(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float32) for k, v in params.items()}


def fit_mlp(emb: np.ndarray, y: np.ndarray, *, hidden: int = 64, seed: int = 0) -> MLPPredictor:
    """The MLP predictor (``MLPPredictor``) fitted to (N, E) embeddings and (N, K) scores."""
    rng = np.random.default_rng(seed)
    e, k = emb.shape[1], y.shape[1]
    params = {
        "w1": rng.normal(0, 1 / np.sqrt(e), (e, hidden)),
        "b1": np.zeros(hidden),
        "w2": rng.normal(0, 1 / np.sqrt(hidden), (hidden, k)),
        "b2": np.log(np.clip(y.mean(0), 0.02, 0.98) / (1 - np.clip(y.mean(0), 0.02, 0.98))),
    }

    def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, Backward]:
        pre = x @ p["w1"] + p["b1"]
        h = np.maximum(pre, 0.0)
        out = 1 / (1 + np.exp(-np.clip(h @ p["w2"] + p["b2"], -30, 30)))

        def backward(dz: np.ndarray) -> dict[str, np.ndarray]:
            dh = (dz @ p["w2"].T) * (pre > 0)
            return {"w2": h.T @ dz, "b2": dz.sum(0), "w1": x.T @ dh, "b1": dh.sum(0)}

        return out, backward

    return MLPPredictor(
        _train(_f32(params), forward, emb.astype(np.float32), y.astype(np.float32), seed)
    )


def fit_mf(emb: np.ndarray, y: np.ndarray, *, dim: int = 32, seed: int = 0) -> MFPredictor:
    """RouteLLM-style matrix factorisation (``MFPredictor``) fitted like ``fit_mlp``."""
    rng = np.random.default_rng(seed)
    e, k = emb.shape[1], y.shape[1]
    base = np.clip(y.mean(0), 0.02, 0.98)
    params = {
        "proj": rng.normal(0, 1 / np.sqrt(e), (e, dim)),
        "models": rng.normal(0, 1.0, (k, dim)),
        "w": np.full(dim, 0.1),
        "bias": np.log(base / (1 - base)),
    }

    def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, Backward]:
        q = x @ p["proj"]  # (B, D)
        qw = q * p["w"]
        out = 1 / (1 + np.exp(-np.clip(qw @ p["models"].T + p["bias"], -30, 30)))

        def backward(dz: np.ndarray) -> dict[str, np.ndarray]:
            g_models = dz.T @ qw  # (K, D)
            g_qw = dz @ p["models"]  # (B, D)
            return {
                "models": g_models,
                "bias": dz.sum(0),
                "w": (g_qw * q).sum(0),
                "proj": x.T @ (g_qw * p["w"]),
            }

        return out, backward

    return MFPredictor(
        _train(_f32(params), forward, emb.astype(np.float32), y.astype(np.float32), seed)
    )
