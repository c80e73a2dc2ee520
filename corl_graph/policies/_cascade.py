"""The learned cascade router: ordered cascades of experts with learned stopping (numpy only).

For each tier the router holds one operating point: a cascade (experts cheapest first) and a
stop threshold. It calls the cascade's first expert; after each reply a logistic stop scorer
estimates the probability that this reply is right, from what only a multi-round router can
see: the reply's agreement with the replies so far, whether it holds a well-formed answer,
its length, and a correctness predictor's estimate for each expert of the cascade (a kNN
over the training queries' embeddings). It answers with that reply once the estimate reaches
the threshold, else calls the next expert. A point may be a single model: the fallback when
routing did not beat the best single model on validation data
(``corl_graph.evaluation.fit_router`` fits and chooses them; docs/evaluation.md).

Saved as a folder: ``router.json`` (experts, reservations, points, scorers' layout) and
``router.npz`` (the predictor's index and the scorers' weights).

>>> policy = CascadeRouter.load("benchmarks/results/policies/zeroeval_gsm8k")  # doctest: +SKIP
>>> result = await router.arun(query, tier="low", features=embedding)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corl_graph._exceptions import ConfigError, DataFormatError, PolicyError
from corl_graph.experts import normalize_answer
from corl_graph.policies._base import Decision, PolicyView
from corl_graph.policies._score import MFPredictor, MLPPredictor
from corl_graph.protocol import Answer, CallExpert

__all__ = [
    "N_STOP_FEATURES",
    "CascadeRouter",
    "OperatingPoint",
    "RouterSpec",
    "knn_estimate",
    "stop_features",
    "stop_scores",
]

FORMAT = "corl_graph.cascade_router"
N_STOP_FEATURES = 11


@dataclass(frozen=True)
class OperatingPoint:
    """A cascade (indices into the router's experts, cheapest first) and its stop threshold
    (1.01: never stop early). ``fallback``: a single model chosen because routing did not beat
    it on validation. ``train_accuracy`` / ``train_cost_usd``: cross-validated on train."""

    cascade: tuple[int, ...]
    theta: float
    fallback: bool = False
    train_accuracy: float = math.nan
    train_cost_usd: float = math.nan
    label: str = ""
    # Set: a one-call route instead of a cascade: call the expert of ``cascade`` with the best
    # estimate - route_weight x its mean cost / the priciest candidate's, then answer.
    route_weight: float | None = None
    # Answer with the replies' majority answer when at least two agree (ties: the answer
    # given latest), else with the last reply; False: always the last reply.
    vote: bool = False
    # With ``vote``: a weighted vote instead: the answer whose replies' summed correctness
    # estimates (the predictor's, per expert) are largest (ties: the one given latest), so a
    # lone reply from a trusted expert can outvote two from weak ones.
    weighted: bool = False

    @property
    def key(self) -> str:
        return "-".join(str(i) for i in self.cascade)

    @property
    def kind(self) -> str:
        return "route" if self.route_weight is not None else "cascade"


@dataclass(frozen=True)
class RouterSpec:
    """Everything but the arrays: experts (names), what one call of each reserves at most
    (train), the kNN predictor's k, reply-length statistics, tiers and sweep points."""

    experts: tuple[str, ...]
    reserve_usd: tuple[float, ...]
    knn_k: int
    token_mean: tuple[float, ...]
    token_std: tuple[float, ...]
    tiers: Mapping[str, OperatingPoint]
    tier_caps_usd: Mapping[str, float]
    sweep: tuple[OperatingPoint, ...] = ()
    embed_dim: int = 384
    table: str = ""
    controller: str = ""
    notes: Mapping[str, Any] = field(default_factory=dict)


def knn_estimate(index: np.ndarray, correct: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Mean correctness per expert over each query's k nearest training queries (cosine on
    unit vectors): (B, E) x (M, E), (M, K) -> (B, K)."""
    sims = queries @ index.T  # (B, M)
    k = min(k, index.shape[0])
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.asarray(correct[top].mean(1))


def stop_features(
    p_hat: np.ndarray,
    answer_id: np.ndarray,
    has_answer: np.ndarray,
    tokens_z: np.ndarray,
    j: int,
) -> np.ndarray:
    """Features of stopping after the j-th call (1-based) of an m-expert cascade:
    (B, m) estimates, (B, m) answer ids (-1: none), (B, m) bool, (B, m) reply-length z-scores
    (columns past j are ignored) -> (B, N_STOP_FEATURES)."""
    b, m = p_hat.shape
    cur = j - 1
    p = np.clip(p_hat[:, cur], 1e-3, 1 - 1e-3)
    later = p_hat[:, j:].max(1) if j < m else np.zeros(b)
    if j > 1:
        mine = answer_id[:, cur : cur + 1]
        earlier = answer_id[:, :cur]
        agree = ((earlier == mine) & (mine >= 0)).sum(1) / cur
        prev_has = has_answer[:, cur - 1].astype(np.float64)
        prev_p = p_hat[:, cur - 1]
    else:
        agree = prev_has = prev_p = np.zeros(b)
    any_agree = (agree > 0).astype(np.float64)
    cols = [
        np.ones(b),
        p,
        later,
        has_answer[:, cur].astype(np.float64),
        agree,
        any_agree,
        np.clip(tokens_z[:, cur], -4, 4),
        np.log(p / (1 - p)),
        p * any_agree,
        prev_has,
        prev_p,
    ]
    return np.stack(cols, axis=1)


def stop_scores(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Logistic stop scorer: (B, F) @ (F,) -> (B,) probability the current reply is right."""
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30))))


class CascadeRouter:
    """The learned cascade router, run with numpy (see the module docstring). Needs the query
    embedding in ``view.features``. ``point``: route every tier with that operating point
    (a sweep point, for the cost/accuracy curve)."""

    def __init__(
        self,
        spec: RouterSpec,
        arrays: Mapping[str, np.ndarray],
        *,
        name: str = "neural",
        point: OperatingPoint | None = None,
    ):
        for key in ("index", "correct"):
            if key not in arrays:
                raise DataFormatError(f"cascade router arrays lack {key!r}")
        k = len(spec.experts)
        index, correct = arrays["index"], arrays["correct"]
        if index.ndim != 2 or index.shape[1] != spec.embed_dim or correct.shape != (len(index), k):
            raise DataFormatError(
                f"cascade router arrays {index.shape} / {correct.shape} do not fit "
                f"{spec.embed_dim}-dim embeddings and {k} experts"
            )
        points = [*spec.tiers.values(), *spec.sweep, *([point] if point else [])]
        for p in points:
            if not p.cascade or any(not 0 <= i < k for i in p.cascade):
                raise DataFormatError(f"operating point {p} names an unknown expert")
            if p.route_weight is not None:
                if "cost_norm" not in arrays:
                    raise DataFormatError("cascade router lacks cost_norm for its routed points")
                continue
            for j in range(1, len(p.cascade)):
                if f"w/{p.key}/{j}" not in arrays:
                    raise DataFormatError(f"cascade router lacks the scorer w/{p.key}/{j}")
        if not spec.tiers:
            raise DataFormatError("cascade router has no tiers")
        self.spec = spec
        self.arrays = {key: np.asarray(v, dtype=np.float32 if key != "correct" else np.float64)
                       for key, v in arrays.items()}  # fmt: skip
        self.point = point
        self.name = name if point is None else f"{name}({point.label or point.key})"

    # -- persistence ------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``folder/router.json`` and ``folder/router.npz``; returns the folder."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        raw = asdict(self.spec)
        raw["format"] = FORMAT
        (out / "router.json").write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")
        store = dict(self.arrays)
        store["index"] = store["index"].astype(np.float16)
        with open(out / "router.npz", "wb") as fh:
            np.savez_compressed(fh, **store)  # type: ignore[arg-type]
        return out

    @staticmethod
    def is_router(path: str | Path) -> bool:
        return (Path(path) / "router.json").is_file()

    @classmethod
    def load(cls, folder: str | Path, **kwargs: Any) -> CascadeRouter:
        """Read a folder written by ``save`` (or by ``corl-graph fit``)."""
        base = Path(folder)
        try:
            raw = json.loads((base / "router.json").read_text(encoding="utf-8"))
            with np.load(base / "router.npz", allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise DataFormatError(f"cannot read cascade router {str(base)!r}: {exc}") from exc
        if raw.pop("format", None) != FORMAT:
            raise DataFormatError(f"{str(base)!r} does not hold a {FORMAT} (router.json)")
        try:
            spec = RouterSpec(
                experts=tuple(raw["experts"]),
                reserve_usd=tuple(raw["reserve_usd"]),
                knn_k=int(raw["knn_k"]),
                token_mean=tuple(raw["token_mean"]),
                token_std=tuple(raw["token_std"]),
                tiers={t: _point(p) for t, p in raw["tiers"].items()},
                tier_caps_usd=dict(raw["tier_caps_usd"]),
                sweep=tuple(_point(p) for p in raw.get("sweep", ())),
                embed_dim=int(raw.get("embed_dim", 384)),
                table=str(raw.get("table", "")),
                controller=str(raw.get("controller", "")),
                notes=dict(raw.get("notes", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"cascade router {str(base)!r}: bad router.json: {exc}") from exc
        return cls(spec, arrays, **kwargs)

    def at(self, point: OperatingPoint, name: str = "neural") -> CascadeRouter:
        """The same router, every tier routed with ``point``."""
        return CascadeRouter(self.spec, self.arrays, name=name, point=point)

    # -- deciding -----------------------------------------------------------------------
    def point_for(self, tier: str, cap: float) -> OperatingPoint:
        if self.point is not None:
            return self.point
        if tier in self.spec.tiers:
            return self.spec.tiers[tier]
        # An unknown tier routes as the largest trained tier whose cap it affords.
        fits = [t for t in self.spec.tiers if self.spec.tier_caps_usd.get(t, math.inf) <= cap]
        return self.spec.tiers[fits[-1] if fits else next(iter(self.spec.tiers))]

    def estimate(self, emb: np.ndarray) -> np.ndarray:
        """The correctness predictor: (B, E) -> (B, K), the mean of the kNN estimate and, when
        the router holds them, an MLP's and a matrix factorisation's (a stack of three)."""
        parts = [knn_estimate(self.arrays["index"], self.arrays["correct"], emb, self.spec.knn_k)]
        for prefix, cls in (("mlp/", MLPPredictor), ("mf/", MFPredictor)):
            params = {k[len(prefix) :]: v for k, v in self.arrays.items() if k.startswith(prefix)}
            if params:
                parts.append(cls(params).predict(emb.astype(np.float64)))
        return np.asarray(np.mean(parts, axis=0))

    def route_choice(
        self, point: OperatingPoint, emb: np.ndarray, allowed: np.ndarray
    ) -> np.ndarray:
        """A routed point's expert per query (index into ``point.cascade``; -1: none
        affordable): (B, E), (B, len(cascade)) bool -> (B,)."""
        cl = list(point.cascade)
        score = (
            self.estimate(emb)[:, cl]
            - (point.route_weight or 0.0) * self.arrays["cost_norm"].astype(np.float64)[cl]
        )
        score = np.where(allowed, score, -np.inf)
        return np.where(allowed.any(1), score.argmax(1), -1)

    def scorer(self, point: OperatingPoint, j: int) -> np.ndarray:
        return self.arrays[f"w/{point.key}/{j}"].astype(np.float64)

    def tokens_z(self, cascade: Sequence[int], tokens: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.spec.token_mean)[list(cascade)]
        std = np.asarray(self.spec.token_std)[list(cascade)]
        return np.asarray((np.log1p(tokens) - mean) / np.maximum(std, 1e-3))

    async def decide(self, view: PolicyView) -> Decision:
        point = self.point_for(view.tier.name, view.tier.max_usd_per_query)
        if point.route_weight is not None:
            return self._route(view, point)
        names = [self.spec.experts[i] for i in point.cascade]
        replies = {c.expert: c for c in view.calls if c.status in ("ok", "truncated")}
        done = 0
        while done < len(names) and names[done] in replies:
            done += 1
        live = done < len(names) and not view.budget_exhausted
        if done and live and self._stop(view, point, names, replies, done):
            return self._answer(view, point)
        if done < len(names) and not view.budget_exhausted:
            nxt = point.cascade[done]
            if self.spec.reserve_usd[nxt] <= view.remaining_usd + 1e-12:
                return Decision(CallExpert(names[done], view.query))
        return self._answer(view, point)

    def _answer(self, view: PolicyView, point: OperatingPoint) -> Decision:
        if not point.vote:
            return _answer_last(view)
        if not point.weighted:
            return _answer_vote(view)
        p_hat = self.estimate(self._embedding(view))[0]
        weight = {self.spec.experts[i]: float(p_hat[i]) for i in point.cascade}
        return _answer_weighted(view, weight)

    def _route(self, view: PolicyView, point: OperatingPoint) -> Decision:
        if view.calls or view.budget_exhausted:
            return _answer_last(view)
        emb = self._embedding(view)
        offered = {e.name for e in view.experts}
        allowed = np.array([[
            self.spec.experts[i] in offered
            and self.spec.reserve_usd[i] <= view.remaining_usd + 1e-12
            for i in point.cascade
        ]])  # fmt: skip
        j = int(self.route_choice(point, emb, allowed)[0])
        if j < 0:
            return Decision(Answer(""))
        return Decision(CallExpert(self.spec.experts[point.cascade[j]], view.query))

    def _embedding(self, view: PolicyView) -> np.ndarray:
        if view.features is None or len(view.features) != self.spec.embed_dim:
            raise PolicyError(
                f"{self.name} needs a {self.spec.embed_dim}-dim query embedding in features"
            )
        return np.asarray(view.features, dtype=np.float32)[None, :]

    def _stop(
        self,
        view: PolicyView,
        point: OperatingPoint,
        names: Sequence[str],
        replies: Mapping[str, Any],
        j: int,
    ) -> bool:
        p_hat = self.estimate(self._embedding(view))[:, list(point.cascade)]
        m = len(names)
        ids: dict[str, int] = {}
        answer_id = np.full((1, m), -1, np.int64)
        has_answer = np.zeros((1, m), bool)
        tokens = np.zeros((1, m))
        for i, n in enumerate(names[:j]):
            c = replies[n]
            tokens[0, i] = c.output_tokens
            if c.status == "ok" and c.answer is not None:
                has_answer[0, i] = True
                answer_id[0, i] = ids.setdefault(normalize_answer(c.answer), len(ids))
        x = stop_features(p_hat, answer_id, has_answer, self.tokens_z(point.cascade, tokens), j)
        return bool(stop_scores(x, self.scorer(point, j))[0] >= point.theta)


def _answer_last(view: PolicyView) -> Decision:
    for c in reversed(view.calls):
        if c.status in ("ok", "truncated") and (c.answer or c.text):
            return Decision(Answer(c.answer if c.answer is not None else c.text))
    return Decision(Answer(""))


def _answer_vote(view: PolicyView) -> Decision:
    """The answer most replies gave when at least two agree (ties: the one given latest),
    else the last reply's (``OperatingPoint.vote``; ``vote_position`` in the simulation)."""
    ok = [c for c in view.calls if c.status == "ok" and c.answer is not None]
    counts: dict[str, int] = {}
    for c in ok:
        key = normalize_answer(c.answer or "")
        counts[key] = counts.get(key, 0) + 1
    best = max(counts.values(), default=0)
    if best < 2:
        return _answer_last(view)
    for c in reversed(ok):
        if counts[normalize_answer(c.answer or "")] == best:
            return Decision(Answer(c.answer or ""))
    return _answer_last(view)  # unreachable: some reply holds the best count


def _answer_weighted(view: PolicyView, weight: Mapping[str, float]) -> Decision:
    """The answer whose replies' summed ``weight`` (per expert) is largest (ties: the one
    given latest); without any answer, the last reply's (``weighted_vote_position`` in the
    simulation)."""
    ok = [c for c in view.calls if c.status == "ok" and c.answer is not None]
    if not ok:
        return _answer_last(view)
    total: dict[str, float] = {}
    for c in ok:
        key = normalize_answer(c.answer or "")
        total[key] = total.get(key, 0.0) + weight.get(c.expert, 0.0)
    best = max(total.values())
    for c in reversed(ok):
        if total[normalize_answer(c.answer or "")] >= best - 1e-9:
            return Decision(Answer(c.answer or ""))
    return _answer_last(view)  # unreachable: some reply holds the best total


def _point(raw: Mapping[str, Any]) -> OperatingPoint:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"an operating point must be an object, got {raw!r}")
    return OperatingPoint(
        cascade=tuple(int(i) for i in raw["cascade"]),
        theta=float(raw["theta"]),
        fallback=bool(raw.get("fallback", False)),
        train_accuracy=float(raw.get("train_accuracy", math.nan)),
        train_cost_usd=float(raw.get("train_cost_usd", math.nan)),
        label=str(raw.get("label", "")),
        route_weight=None if raw.get("route_weight") is None else float(raw["route_weight"]),
        vote=bool(raw.get("vote", False)),
        weighted=bool(raw.get("weighted", False)),
    )
