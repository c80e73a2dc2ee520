"""Train the small neural routing policy with PPO on replayed outcomes (needs torch).

One model for all tiers: each episode draws a tier (its cap masks unaffordable calls) and a
cost weight ``w``; the reward is ``correct - w * cost / cost_ref`` (CORL's r_perf with a cost
term; the cap itself is a hard constraint, as in the graph). After training, each tier gets
the ``w`` that works best on held-out training queries (``calibrate_tiers``), and the
weights are exported to numpy for ``corl_graph.policies.NeuralPolicy``.

The advantage and loss functions are the project's shared pure functions
(``corl_graph.training._ppo_losses``); here an episode is a row and a routing step a column.

    python -m corl_graph.training.neural_ppo --table ../shared/data/outcomes/zeroeval_gsm8k.jsonl.gz
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from corl_graph.training._ppo_losses import compute_gae, masked_mean, policy_loss, value_loss
from torch import nn

from corl_graph.budget import TierSet
from corl_graph.evaluation._sim import EpisodeArrays, ReplaySim, episode_arrays, run_episodes
from corl_graph.experts import OutcomeTable, ReplayExpert
from corl_graph.policies._neural import (
    _LOG_W_RANGE,
    NeuralMeta,
    NeuralPolicy,
    action_mask,
    project,
    step_features,
)

__all__ = ["NeuralPPOConfig", "calibrate_tiers", "train_neural_policy"]


@dataclass(frozen=True)
class NeuralPPOConfig:
    """PPO settings for the routing MLP; the defaults train a table in about a minute."""

    hidden: int = 128
    iterations: int = 150
    episodes_per_iter: int = 1024
    epochs: int = 8
    minibatch: int = 512
    proj_dim: int = 32
    lr: float = 2e-3
    clip: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.05
    gae_lambda: float = 0.95
    calibration_share: float = 0.2
    calibration_tolerance: float = 0.005
    weight_grid: tuple[float, ...] = field(
        default_factory=lambda: tuple(float(w) for w in np.geomspace(1e-3, 3.0, 25))
    )
    seed: int = 0
    threads: int = 1


class _Net(nn.Module):
    """Policy and value MLPs; the policy's layout matches ``mlp_logits`` in numpy."""

    def __init__(self, n_in: int, n_actions: int, hidden: int):
        super().__init__()
        self.pi = nn.Sequential(
            nn.Linear(n_in, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, n_actions),
        )
        self.v = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        with torch.no_grad():  # a near-uniform start, as CleanRL's 0.01-gain last layer
            self.pi[-1].weight.mul_(0.01)

    def numpy_params(self) -> dict[str, np.ndarray]:
        layers = [m for m in self.pi if isinstance(m, nn.Linear)]
        out: dict[str, np.ndarray] = {}
        for i, layer in enumerate(layers, start=1):
            out[f"w{i}"] = layer.weight.detach().numpy().T.copy()  # (in, out)
            out[f"b{i}"] = layer.bias.detach().numpy().copy()
        return out


def _split(ids: Sequence[str], share: float) -> tuple[list[str], list[str]]:
    """Deterministic fit / calibration split by hash of the query id."""

    def held(q: str) -> bool:
        return int(hashlib.sha1(q.encode()).hexdigest(), 16) % 1000 < share * 1000

    return [q for q in ids if not held(q)], [q for q in ids if held(q)]


def _pca(vectors: np.ndarray, dim: int) -> dict[str, np.ndarray]:
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


def _meta(
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
    )


@dataclass
class _Env:
    arrays: EpisodeArrays
    emb: np.ndarray  # (N, E)
    est: np.ndarray  # (N, K)
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


def _env(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    ids: Sequence[str],
    emb: dict[str, np.ndarray],
    meta: NeuralMeta,
    pca: dict[str, np.ndarray],
) -> _Env:
    arrays = episode_arrays(table, experts, ids)
    est = np.stack([meta.estimate_usd(int(b)) for b in arrays.query_bytes])
    vectors = project(pca, np.stack([emb[q] for q in ids]).astype(np.float32))
    return _Env(
        arrays, vectors, est, np.array(meta.output_usd_per_mtok), np.array(meta.tier_caps_usd)
    )


def _rollout(
    net: _Net, env: _Env, meta: NeuralMeta, rng: np.random.Generator, n: int
) -> dict[str, torch.Tensor]:
    """Sample n episodes; returns (B, T) tensors of features, actions, log-probs, masks."""
    rows = rng.integers(0, len(env.emb), n)
    tier = rng.integers(0, len(env.caps), n)
    log_w = rng.uniform(*_LOG_W_RANGE, n)
    sim = env.sim(rows, tier, log_w)
    steps = meta.n_experts + 2
    feats, acts, masks, alive = [], [], [], []
    for t in range(steps):
        s = sim.state()
        live = ~sim.done
        x = torch.from_numpy(step_features(s, len(meta.tiers)))
        allowed = action_mask(s)
        if t == steps - 1:
            allowed[:, 1 : meta.n_experts + 1] = False
        with torch.no_grad():
            logits = net.pi(x).masked_fill(~torch.from_numpy(allowed), -1e9)
        a = torch.distributions.Categorical(logits=logits).sample().numpy()
        feats.append(x)
        acts.append(torch.from_numpy(a))
        masks.append(torch.from_numpy(allowed))
        alive.append(torch.from_numpy(live.astype(np.float32)))
        sim.step(a)
    cost = sim.s.spent
    score = sim.correct - np.exp(log_w) * cost / meta.cost_ref_usd
    return {
        "x": torch.stack(feats, 1),
        "a": torch.stack(acts, 1),
        "allowed": torch.stack(masks, 1),
        "mask": torch.stack(alive, 1),
        "score": torch.from_numpy(score.astype(np.float32)),
        "correct": torch.from_numpy(sim.correct),
        "cost": torch.from_numpy(cost),
    }


def _evaluate_old(net: _Net, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        logits = net.pi(batch["x"]).masked_fill(~batch["allowed"], -1e9)  # (B, T, A)
        logp = torch.log_softmax(logits, -1).gather(-1, batch["a"].unsqueeze(-1)).squeeze(-1)
        values = net.v(batch["x"]).squeeze(-1)  # (B, T)
    mask = batch["mask"]
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    last = torch.where(mask > 0, positions, -1).max(1).values  # (B,)
    rewards = torch.zeros_like(mask)
    rewards[torch.arange(mask.shape[0]), last] = batch["score"]
    adv, ret = compute_gae(rewards, values * mask, mask, gamma=1.0, lam=0.95)
    return {"logp": logp, "values": values, "adv": adv, "ret": ret}


def _update(
    net: _Net,
    opt: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    old: dict[str, torch.Tensor],
    cfg: NeuralPPOConfig,
    gen: torch.Generator,
    entropy_coef: float,
) -> dict[str, float]:
    """PPO epochs over minibatches of episodes (rows), losses masked to live steps."""
    mask = batch["mask"]
    adv = old["adv"]
    adv = (
        (adv - masked_mean(adv, mask))
        / (masked_mean((adv - masked_mean(adv, mask)) ** 2, mask).sqrt() + 1e-8)
        * mask
    )
    n = mask.shape[0]
    stats: dict[str, float] = {}
    for _ in range(cfg.epochs):
        for idx in torch.randperm(n, generator=gen).split(cfg.minibatch):
            m = mask[idx]  # (b, T)
            logits = net.pi(batch["x"][idx]).masked_fill(~batch["allowed"][idx], -1e9)
            logp_all = torch.log_softmax(logits, -1)  # (b, T, A)
            logp = logp_all.gather(-1, batch["a"][idx].unsqueeze(-1)).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)  # (b, T)
            pl, pstats = policy_loss(logp, old["logp"][idx], adv[idx], m, clip=cfg.clip)
            values = net.v(batch["x"][idx]).squeeze(-1)
            vl, _ = value_loss(values, old["values"][idx], old["ret"][idx], m, clip=None)
            ent = masked_mean(entropy, m)
            loss = pl + cfg.value_coef * vl - entropy_coef * ent
            opt.zero_grad()  # (entropy bonus annealed by the caller)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 0.5)
            opt.step()
            stats = {
                "losses/policy": pl.item(),
                "losses/value": vl.item(),
                "losses/approx_kl": float(pstats["approx_kl"]),
                "losses/clipfrac": float(pstats["clipfrac"]),
                "losses/entropy": ent.item(),
            }
    return stats


def greedy_results(
    policy: NeuralPolicy, env: _Env, tier: int, weight: float
) -> tuple[float, float]:
    """(accuracy, mean cost) of the greedy numpy policy at one tier and cost weight."""
    n = len(env.emb)
    sim = env.sim(np.arange(n), np.full(n, tier), np.full(n, math.log(weight)))
    run_episodes(policy.act, sim)
    return float(sim.correct.mean()), float(sim.s.spent.mean())


def calibrate_tiers(policy: NeuralPolicy, env: _Env, cfg: NeuralPPOConfig) -> dict[str, float]:
    """Per tier, the cheapest cost weight whose held-out accuracy is within
    ``calibration_tolerance`` of the best weight's (all respect the cap by construction)."""
    chosen: dict[str, float] = {}
    for t, name in enumerate(policy.meta.tiers):
        results = [(w, *greedy_results(policy, env, t, w)) for w in cfg.weight_grid]
        best = max(acc for _, acc, _ in results)
        fit = [(cost, w) for w, acc, cost in results if acc >= best - cfg.calibration_tolerance]
        chosen[name] = min(fit)[1]
    return chosen


def train_neural_policy(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    tiers: TierSet,
    embeddings: dict[str, np.ndarray],
    *,
    config: NeuralPPOConfig | None = None,
    split: str = "train",
    log: bool = True,
) -> NeuralPolicy:
    """Train on ``split`` (minus a held-out share for calibration) and calibrate each tier."""
    cfg = config or NeuralPPOConfig()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    ids = sorted(q for q, info in table.queries.items() if info.split == split)
    fit_ids, cal_ids = _split(ids, cfg.calibration_share)
    dim = len(next(iter(embeddings.values())))
    meta = _meta(table, experts, tiers, episode_arrays(table, experts, fit_ids), dim, cfg.proj_dim)
    pca = _pca(np.stack([embeddings[q] for q in fit_ids]), cfg.proj_dim)
    fit_env = _env(table, experts, fit_ids, embeddings, meta, pca)
    cal_env = _env(table, experts, cal_ids, embeddings, meta, pca)
    net = _Net(meta.n_features, meta.n_actions, cfg.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=1e-5)
    started = time.perf_counter()
    for it in range(cfg.iterations):
        for group in opt.param_groups:  # linear learning-rate decay, as in CleanRL
            group["lr"] = cfg.lr * (1.0 - it / cfg.iterations)
        batch = _rollout(net, fit_env, meta, rng, cfg.episodes_per_iter)
        stats = _update(
            net,
            opt,
            batch,
            _evaluate_old(net, batch),
            cfg,
            gen,
            cfg.entropy_coef * (1.0 - it / cfg.iterations),
        )
        if log and (it % 25 == 0 or it == cfg.iterations - 1):
            print(
                f"iter {it:4d} reward {float(batch['score'].mean()):.3f} "
                f"acc {float(batch['correct'].mean()):.3f} "
                f"ent {stats['losses/entropy']:.3f} kl {stats['losses/approx_kl']:.4f} "
                f"{time.perf_counter() - started:.0f}s",
                flush=True,
            )
    policy = NeuralPolicy({**net.numpy_params(), **pca}, meta)
    weights = calibrate_tiers(policy, cal_env, cfg)
    notes = {
        "iterations": cfg.iterations,
        "episodes_per_iter": cfg.episodes_per_iter,
        "fit_queries": len(fit_ids),
        "calibration_queries": len(cal_ids),
        "seed": cfg.seed,
    }
    meta = NeuralMeta(**{**meta.__dict__, "tier_cost_weight": weights, "notes": notes})
    return NeuralPolicy(policy.params, meta)


def _demo_setup(
    embeddings: str,
) -> tuple[OutcomeTable, list[ReplayExpert], TierSet, dict[str, np.ndarray]]:
    from corl_graph.data import demo_experts, demo_tiers, load_demo_table
    from corl_graph.evaluation._embed import load_embeddings

    table = load_demo_table()
    return table, demo_experts(table), demo_tiers(), load_embeddings(embeddings)


def main(argv: Sequence[str] | None = None) -> int:
    """Train on a table with its preset pool and tiers (or the bundled demo table)."""
    import argparse

    from corl_graph.evaluation._embed import table_embeddings
    from corl_graph.evaluation._presets import preset_experts, preset_for

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", help="canonical outcome table (.jsonl.gz)")
    parser.add_argument("--demo-embeddings", help="train for the bundled demo table with these")
    parser.add_argument("--out", required=True, help="output path without suffix")
    parser.add_argument("--iterations", type=int, default=NeuralPPOConfig.iterations)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    cfg = NeuralPPOConfig(iterations=args.iterations, seed=args.seed)
    if args.demo_embeddings:
        table, experts, tiers, emb = _demo_setup(args.demo_embeddings)
    else:
        table = OutcomeTable.load(args.table)
        preset = preset_for(table.name)
        experts, tiers = preset_experts(table, preset), preset.tiers()
        emb = table_embeddings(table, cache_dir=args.cache_dir)
    policy = train_neural_policy(table, experts, tiers, emb, config=cfg)
    policy.save(args.out)
    print(f"saved {args.out}.npz/.json; tier cost weights {policy.meta.tier_cost_weight}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
