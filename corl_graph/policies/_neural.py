"""A small neural routing policy: an MLP over the query embedding, the tier and the step.

Inference is numpy only (two matrix products per step, a few microseconds); torch is needed
only to train it (``corl_graph.training.neural_ppo``). Saved as ``NAME.npz`` (weights) and
``NAME.json`` (experts, tiers, cost scale, per-tier cost weights).

Actions, for a pool of K experts::

    0          answer with the last reply (its extracted answer, else its text)
    1 .. K     call expert k with the query
    K + 1      aggregate: majority vote of the answers so far
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corl_graph._exceptions import ConfigError, DataFormatError, PolicyError
from corl_graph.policies._base import Decision, PolicyView
from corl_graph.protocol import Aggregate, Answer, CallExpert

__all__ = [
    "FEATURE_VERSION",
    "LOG_W_RANGE",
    "NeuralMeta",
    "NeuralPolicy",
    "StepBatch",
    "action_mask",
    "mlp_logits",
    "plurality",
    "project",
    "step_features",
]

# Output tokens enter as log1p(tokens) / 8, which maps 0..3000 tokens onto about 0..1.
_TOKEN_SCALE = 8.0
# The range of log cost weights (ln w) the network sees: step_features scales ln w onto 0..1
# over it, and the trainer samples training episodes' ln w uniformly in it.
LOG_W_RANGE = (math.log(1e-3), math.log(3.0))
# Agreement features of version 2: plurality count, distinct answers, the priciest agreeing
# expert's price, and "two / three answers agree" (what an agreement cascade stops on).
_V2_EXTRA = 5
FEATURE_VERSION = 2


@dataclass(frozen=True)
class NeuralMeta:
    """What the weights need to be used: the experts (in action order), the tiers, the cost
    scale ``cost_ref_usd`` (cost enters the reward as ``w * cost / cost_ref_usd``), each
    tier's calibrated cost weight ``w``, and a typical input length for cost estimates."""

    experts: tuple[str, ...]
    output_usd_per_mtok: tuple[float, ...]
    input_usd_per_mtok: tuple[float, ...]
    max_output_tokens: tuple[int, ...]
    tiers: tuple[str, ...]
    tier_caps_usd: tuple[float, ...]
    cost_ref_usd: float
    typical_input_tokens: int
    tier_cost_weight: Mapping[str, float] = field(default_factory=dict)
    # Recorded costs can exceed tokens x list price; replayed experts scale what they reserve
    # by this factor (``ReplayExpert``), so the policy's estimate does too. Empty: all 1.
    reserve_factor: tuple[float, ...] = ()
    embed_dim: int = 384
    proj_dim: int = 384
    table: str = ""
    notes: Mapping[str, Any] = field(default_factory=dict)
    # 1: the original step features; 2 adds the answers' agreement (see ``step_features``).
    # Files written before the field existed load as 1, so their weights keep fitting.
    feature_version: int = 1

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    @property
    def n_actions(self) -> int:
        return len(self.experts) + 2

    @property
    def n_features(self) -> int:
        extra = _V2_EXTRA if self.feature_version >= 2 else 0
        return self.proj_dim + len(self.tiers) + 1 + 6 * self.n_experts + 5 + extra

    def estimate_usd(self, query_bytes: int) -> np.ndarray:
        """Worst-case price of one call per expert, as the policy estimates it: (K,)."""
        tokens = max(math.ceil(query_bytes / 4) + 16, self.typical_input_tokens)
        pin = np.asarray(self.input_usd_per_mtok)
        pout = np.asarray(self.output_usd_per_mtok)
        factor = np.asarray(self.reserve_factor or (1.0,) * self.n_experts)
        return np.asarray(factor * (tokens * pin + np.asarray(self.max_output_tokens) * pout) / 1e6)


@dataclass
class StepBatch:
    """The state of B routing episodes at one step, as arrays (K experts, E embedding dims)."""

    emb: np.ndarray  # (B, P) query embeddings, projected (see ``project``)
    tier: np.ndarray  # (B,) tier index
    log_w: np.ndarray  # (B,) log cost weight
    called: np.ndarray  # (B, K) bool: expert k was called
    answer_id: np.ndarray  # (B, K) int: id of expert k's answer in this query, -1 none
    replied: np.ndarray  # (B, K) bool: expert k returned text
    out_tokens: np.ndarray  # (B, K) output tokens of expert k's reply, 0 if not called
    spent: np.ndarray  # (B,) dollars spent so far
    cap: np.ndarray  # (B,) the tier's cap
    est: np.ndarray  # (B, K) estimated worst-case price of a call
    exhausted: np.ndarray  # (B,) bool: the ledger refused a call

    @property
    def remaining_usd(self) -> np.ndarray:
        """(B,) what each episode may still spend under its cap (>= 0), as
        ``BudgetTier.remaining_usd`` for one query."""
        return np.asarray(np.maximum(self.cap - self.spent, 0.0), dtype=float)


def plurality(answer_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the most common answer id (-1 if none) and its count. (B,), (B,).

    ``answer_id`` is (B, K): expert k's normalised answer's id, -1 where k has not answered.

    >>> plurality(np.array([[3, 3, 5], [-1, -1, -1]]))
    (array([ 3, -1]), array([2, 0]))
    """
    b, k = answer_id.shape
    counts = np.zeros((b, k), dtype=np.int64)
    for j in range(k):
        valid = answer_id[:, j] >= 0
        counts[:, j] = ((answer_id == answer_id[:, j : j + 1]) & valid[:, None]).sum(1) * valid
    top = counts.argmax(1)
    best = counts[np.arange(b), top]
    return np.where(best > 0, answer_id[np.arange(b), top], -1), best


def action_mask(s: StepBatch) -> np.ndarray:
    """Which actions are allowed: (B, K + 2) bool. Calls must look affordable and be new;
    a vote needs two answers; answering needs a reply, unless nothing else is possible."""
    remaining = s.remaining_usd
    can_call = ~s.called & (s.est <= remaining[:, None]) & ~s.exhausted[:, None]
    n_answers = (s.answer_id >= 0).sum(1)
    has_reply = s.replied.any(1)
    answer_ok = has_reply | ~can_call.any(1)
    return np.concatenate([answer_ok[:, None], can_call, (n_answers >= 2)[:, None]], axis=1)


def _agreement(s: StepBatch, top: np.ndarray, top_count: np.ndarray) -> list[np.ndarray]:
    """Version-2 features: how strongly the answers so far agree, and who agrees.

    Agreement between independent experts is the signal that generalises across queries (an
    agreement cascade beats the best single model on GSM8K with it); the embedding alone
    lets a small MLP memorise which cheap model was right on each training query."""
    k = s.called.shape[1]
    valid = s.answer_id >= 0
    # Expert j holds the first occurrence of its answer when no earlier expert gave it;
    # one (B, K, K) comparison rather than a loop keeps a decision in microseconds.
    same = (s.answer_id[:, :, None] == s.answer_id[:, None, :]) & valid[:, None, :]
    first = valid & ~np.tril(same, -1).any(2)
    distinct = first.sum(1)
    agrees = valid & (s.answer_id == top[:, None])
    price = np.where(np.isfinite(s.est), s.est, 0.0)
    rel = price / np.maximum(price.max(1, keepdims=True), 1e-12)
    return [
        (top_count / k)[:, None],
        (distinct / k)[:, None],
        np.where(agrees, rel, 0.0).max(1, initial=0.0)[:, None],
        (top_count >= 2)[:, None],
        (top_count >= 3)[:, None],
    ]


def step_features(s: StepBatch, n_tiers: int, version: int = 1) -> np.ndarray:
    """The network's input: (B, E + T + 1 + 6K + 5) float32, plus ``_V2_EXTRA`` columns of
    answer agreement for ``version`` 2."""
    b, k = s.called.shape
    top, top_count = plurality(s.answer_id)
    n_answers = (s.answer_id >= 0).sum(1)
    cap = np.maximum(s.cap, 1e-12)
    remaining = s.remaining_usd
    tier = np.zeros((b, n_tiers), dtype=np.float32)
    tier[np.arange(b), s.tier] = 1.0
    lo, hi = LOG_W_RANGE
    agrees = (s.answer_id >= 0) & (s.answer_id == top[:, None])
    parts = [
        s.emb,
        tier,
        ((s.log_w - lo) / (hi - lo))[:, None],
        s.called,
        s.answer_id >= 0,
        agrees,
        np.log1p(s.out_tokens) / _TOKEN_SCALE,
        np.minimum(s.est / cap[:, None], 2.0),
        s.est <= remaining[:, None],
        (s.called.sum(1) / k)[:, None],
        np.where(n_answers > 0, top_count / np.maximum(n_answers, 1), 0.0)[:, None],
        (s.spent / cap)[:, None],
        (remaining / cap)[:, None],
        s.exhausted[:, None],
    ]
    if version >= 2:
        parts += _agreement(s, top, top_count)
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=1)


def mlp_logits(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The policy head: tanh MLP, (B, D) -> (B, A). Same layout as the torch trainer's."""
    h = np.tanh(x @ params["w1"] + params["b1"])
    h = np.tanh(h @ params["w2"] + params["b2"])
    return np.asarray(h @ params["w3"] + params["b3"])


def project(params: Mapping[str, np.ndarray], emb: np.ndarray) -> np.ndarray:
    """Embeddings onto the principal directions of the training queries: (B, E) -> (B, P).
    Fewer inputs than 384 keep a policy trained on a thousand queries from memorising them."""
    if "proj" not in params:
        return emb
    return np.asarray((emb - params["mean"]) @ params["proj"] * params["scale"], dtype=np.float32)


def masked_argmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.asarray(np.where(mask, logits, -np.inf).argmax(1))


class NeuralPolicy:
    """The trained router, run with numpy. Needs the query embedding in ``view.features``
    (pass ``features=`` to ``Router.arun``).

    ``cost_weight`` overrides the per-tier calibrated weight (for sweeps along the
    cost/accuracy curve).

    >>> policy = NeuralPolicy.load("corl_graph/data/gsm8k_policy")  # doctest: +SKIP
    >>> result = await router.arun(query, tier="low", features=embedding)  # doctest: +SKIP
    """

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        meta: NeuralMeta,
        *,
        name: str = "neural",
        cost_weight: float | None = None,
    ):
        expected = {"w1", "b1", "w2", "b2", "w3", "b3"}
        if set(params) < expected:
            raise DataFormatError(f"neural policy weights lack {sorted(expected - set(params))}")
        if params["w1"].shape[0] != meta.n_features or params["w3"].shape[1] != meta.n_actions:
            raise DataFormatError(
                f"neural policy weights {params['w1'].shape}->{params['w3'].shape} do not fit "
                f"{meta.n_features} features and {meta.n_actions} actions"
            )
        if cost_weight is not None and not cost_weight > 0:
            raise ConfigError(f"cost_weight must be > 0, got {cost_weight!r}")
        keep = expected | ({"proj", "mean", "scale"} & set(params))
        self.params = {k: np.asarray(params[k], dtype=np.float32) for k in keep}
        self.meta = meta
        self.cost_weight = cost_weight
        self.name = name if cost_weight is None else f"{name}(w={cost_weight:.3g})"

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write ``path.npz`` and ``path.json``."""
        base = Path(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        with open(base.with_suffix(".npz"), "wb") as fh:
            # numpy's stub types **kwds as the bool allow_pickle; the arrays are fine.
            np.savez_compressed(fh, **self.params)  # type: ignore[arg-type]
        meta = asdict(self.meta)
        base.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> NeuralPolicy:
        """Read the files written by ``save`` (``path`` without suffix, or either file)."""
        base = Path(path)
        if base.suffix in (".npz", ".json"):
            base = base.with_suffix("")
        try:
            raw = json.loads(base.with_suffix(".json").read_text(encoding="utf-8"))
            with np.load(base.with_suffix(".npz"), allow_pickle=False) as data:
                params = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise DataFormatError(f"cannot read neural policy {str(base)!r}: {exc}") from exc
        for key in (
            "experts",
            "output_usd_per_mtok",
            "input_usd_per_mtok",
            "max_output_tokens",
            "tiers",
            "tier_caps_usd",
            "reserve_factor",
        ):
            raw[key] = tuple(raw.get(key, ()))
        return cls(params, NeuralMeta(**raw), **kwargs)

    # -- deciding -----------------------------------------------------------------------
    def _tier_index(self, view: PolicyView) -> int:
        if view.tier.name in self.meta.tiers:
            return self.meta.tiers.index(view.tier.name)
        # An unknown tier acts as the largest trained tier whose cap it affords.
        fits = [
            i for i, c in enumerate(self.meta.tier_caps_usd) if c <= view.tier.max_usd_per_query
        ]
        return fits[-1] if fits else 0

    def batch(self, view: PolicyView) -> StepBatch:
        """The view as a one-row ``StepBatch``."""
        meta = self.meta
        if view.features is None or len(view.features) != meta.embed_dim:
            got = None if view.features is None else len(view.features)
            raise PolicyError(
                f"{self.name} needs a {meta.embed_dim}-dim query embedding in features, got {got}"
            )
        k = meta.n_experts
        called = np.zeros((1, k), dtype=bool)
        replied = np.zeros((1, k), dtype=bool)
        answer_id = np.full((1, k), -1, dtype=np.int64)
        out_tokens = np.zeros((1, k), dtype=np.float64)
        ids: dict[str, int] = {}
        index = {name: i for i, name in enumerate(meta.experts)}
        for c in view.calls:
            j = index.get(c.expert)
            if j is None or c.status == "denied":
                continue
            called[0, j] = True
            out_tokens[0, j] = c.output_tokens
            replied[0, j] = c.status in ("ok", "truncated") and bool(c.text or c.answer)
            if c.status == "ok" and c.answer is not None:
                answer_id[0, j] = ids.setdefault(c.answer, len(ids))
        tier = self._tier_index(view)
        w = self.cost_weight or meta.tier_cost_weight.get(meta.tiers[tier], 1.0)
        est = meta.estimate_usd(len(view.query.encode("utf-8")))[None, :]
        offered = {e.name for e in view.experts}
        est = np.where([[n in offered for n in meta.experts]], est, np.inf)
        return StepBatch(
            emb=project(self.params, np.asarray(view.features, dtype=np.float32)[None, :]),
            tier=np.array([tier]),
            log_w=np.array([math.log(w)]),
            called=called,
            answer_id=answer_id,
            replied=replied,
            out_tokens=out_tokens,
            spent=np.array([view.spent_usd]),
            cap=np.array([view.tier.max_usd_per_query]),
            est=est,
            exhausted=np.array([view.budget_exhausted]),
        )

    def act(self, batch: StepBatch) -> np.ndarray:
        """Greedy actions for a batch: (B,) int."""
        x = step_features(batch, len(self.meta.tiers), self.meta.feature_version)
        return masked_argmax(mlp_logits(self.params, x), action_mask(batch))

    async def decide(self, view: PolicyView) -> Decision:
        action = int(self.act(self.batch(view))[0])
        k = self.meta.n_experts
        if 1 <= action <= k:
            return Decision(CallExpert(self.meta.experts[action - 1], view.query))
        if action == k + 1:
            return Decision(Aggregate())
        for c in reversed(view.calls):
            if c.status in ("ok", "truncated") and (c.answer or c.text):
                return Decision(Answer(c.answer if c.answer is not None else c.text))
        return Decision(Answer(""))
