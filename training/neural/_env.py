"""The simulated routing environment and the policy/value network of the neural router."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from corl_graph.budget import TierSet
from corl_graph.evaluation import EpisodeArrays, ReplaySim, episode_arrays
from corl_graph.experts import OutcomeTable, ReplayExpert
from corl_graph.policies import FEATURE_VERSION, NeuralMeta, project

__all__ = ["Env", "Net", "build_env", "build_meta", "pca", "split_ids"]


class Net(nn.Module):
    """Policy and value MLPs; the policy's layout matches ``mlp_logits`` in numpy."""

    def __init__(self, n_in: int, n_actions: int, hidden: int):
        super().__init__()
        logits = nn.Linear(hidden, n_actions)
        self.pi = nn.Sequential(
            nn.Linear(n_in, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            logits,
        )
        self.v = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        with torch.no_grad():  # a near-uniform start, as CleanRL's 0.01-gain last layer
            logits.weight.mul_(0.01)

    def numpy_params(self) -> dict[str, np.ndarray]:
        layers = [m for m in self.pi if isinstance(m, nn.Linear)]
        out: dict[str, np.ndarray] = {}
        for i, layer in enumerate(layers, start=1):
            out[f"w{i}"] = layer.weight.detach().numpy().T.copy()  # (in, out)
            out[f"b{i}"] = layer.bias.detach().numpy().copy()
        return out


def split_ids(ids: Sequence[str], share: float) -> tuple[list[str], list[str]]:
    """Deterministic fit / held-out split by hash of the query id."""

    def held(q: str) -> bool:
        return int(hashlib.sha1(q.encode()).hexdigest(), 16) % 1000 < share * 1000

    return [q for q in ids if not held(q)], [q for q in ids if held(q)]


def pca(vectors: np.ndarray, dim: int) -> dict[str, np.ndarray]:
    """Mean, top-``dim`` principal directions (E, P) and a scale giving unit variance."""
    mean = vectors.mean(0)
    _, sing, vt = np.linalg.svd(vectors - mean, full_matrices=False)
    proj = vt[:dim].T
    scale = 1.0 / (sing[:dim] / math.sqrt(len(vectors)) + 1e-6)
    return {
        "mean": mean.astype(np.float32),
        "proj": proj.astype(np.float32),
        "scale": scale.astype(np.float32),
    }


def build_meta(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    tiers: TierSet,
    arrays: EpisodeArrays,
    embed_dim: int,
    proj_dim: int,
) -> NeuralMeta:
    in_tokens = [table.outcome(q, experts[0].model).input_tokens for q in arrays.query_ids]
    return NeuralMeta(
        experts=tuple(e.name for e in experts),
        output_usd_per_mtok=tuple(e.price.output_usd_per_mtok for e in experts),
        input_usd_per_mtok=tuple(e.price.input_usd_per_mtok for e in experts),
        max_output_tokens=tuple(e.max_output_tokens for e in experts),
        tiers=tuple(tiers),
        tier_caps_usd=tuple(tiers[t].max_usd_per_query for t in tiers),
        cost_ref_usd=float(arrays.cost.mean(0).max()),
        typical_input_tokens=int(np.median(in_tokens)),
        reserve_factor=tuple(float(getattr(e, "_cost_factor", 1.0)) for e in experts),
        embed_dim=embed_dim,
        proj_dim=proj_dim,
        table=table.name,
        feature_version=FEATURE_VERSION,
    )


@dataclass
class Env:
    """N queries of one split, tabulated for ``ReplaySim``."""

    arrays: EpisodeArrays
    emb: np.ndarray  # (N, P) projected embeddings
    est: np.ndarray  # (N, K) the policy's worst-case price estimates
    price_rank: np.ndarray  # (K,)
    caps: np.ndarray  # (T,)

    def sim(self, rows: np.ndarray, tier: np.ndarray, log_w: np.ndarray) -> ReplaySim:
        return ReplaySim(
            self.arrays,
            self.emb,
            self.est,
            self.price_rank,
            rows=rows,
            tier=tier,
            cap=self.caps[tier],
            log_w=log_w,
        )


def build_env(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    ids: Sequence[str],
    emb: dict[str, np.ndarray],
    meta: NeuralMeta,
    pca_params: dict[str, np.ndarray],
) -> Env:
    arrays = episode_arrays(table, experts, ids)
    est = np.stack([meta.estimate_usd(int(b)) for b in arrays.query_bytes])
    vectors = project(pca_params, np.stack([emb[q] for q in ids]).astype(np.float32))
    return Env(
        arrays, vectors, est, np.array(meta.output_usd_per_mtok), np.array(meta.tier_caps_usd)
    )
