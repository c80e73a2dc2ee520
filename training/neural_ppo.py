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

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from corl_graph._exceptions import ConfigError
from corl_graph.budget import TierSet
from corl_graph.evaluation import episode_arrays, run_episodes
from corl_graph.experts import OutcomeTable, ReplayExpert
from corl_graph.policies import (
    LOG_W_RANGE,
    NeuralMeta,
    NeuralPolicy,
    action_mask,
    step_features,
)

from ._ppo_losses import compute_gae, masked_mean, policy_loss, value_loss
from ._rewards import cost_weighted_reward
from .neural._bc import BCConfig, clone_teachers, demonstrations
from .neural._env import Env, Net, build_env, build_meta, pca, split_ids
from .neural._teachers import (
    TeacherMode,
    assign_teachers,
    teacher_bank,
    teacher_rewards,
)

__all__ = [
    "NeuralPPOConfig",
    "calibrate_tiers",
    "corl_score",
    "train_best_policy",
    "train_neural_policy",
]


@dataclass(frozen=True)
class NeuralPPOConfig:
    """Training settings: behaviour cloning (``bc``; None: PPO from scratch), then PPO
    fine-tuning for ``iterations`` (0: the cloned policy as is)."""

    hidden: int = 128
    iterations: int = 40
    episodes_per_iter: int = 1024
    epochs: int = 4
    minibatch: int = 512
    proj_dim: int = 32
    lr: float = 3e-4
    clip: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.005
    gae_lambda: float = 0.95
    calibration_share: float = 0.2
    calibration_tolerance: float = 0.005
    # Where each tier's cost weight is calibrated. "train": the whole train split (fit +
    # held-out); with ~200 held-out queries one query is 0.5 points, as large as the gaps
    # between operating points, so held-out-only calibration picks cheap points by noise.
    # Model selection (seeds, teacher choices) always uses the held-out share alone.
    calibrate_on: Literal["heldout", "train"] = "train"
    weight_grid: tuple[float, ...] = field(
        default_factory=lambda: tuple(float(w) for w in np.geomspace(1e-3, 3.0, 25))
    )
    bc: BCConfig | None = field(default_factory=BCConfig)
    seed: int = 0
    threads: int = 1


def _rollout(
    net: Net, env: Env, meta: NeuralMeta, rng: np.random.Generator, n: int
) -> dict[str, torch.Tensor]:
    """Sample n episodes; returns (B, T) tensors of features, actions, log-probs, masks."""
    rows = rng.integers(0, len(env.emb), n)
    tier = rng.integers(0, len(env.caps), n)
    log_w = rng.uniform(*LOG_W_RANGE, n)
    sim = env.sim(rows, tier, log_w)
    steps = meta.n_experts + 2
    feats, acts, masks, alive = [], [], [], []
    for t in range(steps):
        s = sim.state()
        live = ~sim.done
        x = torch.from_numpy(step_features(s, len(meta.tiers), meta.feature_version))
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
    score = cost_weighted_reward(
        sim.correct, cost, sim.s.cap, weight=np.exp(log_w), cost_ref_usd=meta.cost_ref_usd
    )
    return {
        "x": torch.stack(feats, 1),
        "a": torch.stack(acts, 1),
        "allowed": torch.stack(masks, 1),
        "mask": torch.stack(alive, 1),
        "score": torch.from_numpy(score.astype(np.float32)),
        "correct": torch.from_numpy(sim.correct),
        "cost": torch.from_numpy(cost),
    }


def corl_score(
    correct: np.ndarray, cost: np.ndarray, cap: np.ndarray, log_w: np.ndarray, cost_ref: float
) -> np.ndarray:
    """``cost_weighted_reward`` with the weight as ``log_w`` (kept for its callers): CORL's
    ``correct * 1[cost <= cap]`` minus ``w * cost / cost_ref``."""
    return cost_weighted_reward(correct, cost, cap, weight=np.exp(log_w), cost_ref_usd=cost_ref)


_BC_MODES: dict[str, TeacherMode | None] = {
    "fixed": "fixed",
    "per_query": "per_query",
    "none": None,
}


def _bc_modes(text: str) -> list[TeacherMode | None]:
    """``--bc-modes``: comma-separated teacher choices, ``none`` (None) for PPO from scratch.

    >>> _bc_modes("fixed,none")
    ['fixed', None]
    """
    unknown = [name for name in text.split(",") if name not in _BC_MODES]
    if unknown:
        raise ConfigError(f"unknown --bc-modes {unknown}: use fixed, per_query or none")
    return [_BC_MODES[name] for name in text.split(",")]


def _evaluate_old(net: Net, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
    net: Net,
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


def greedy_results(policy: NeuralPolicy, env: Env, tier: int, weight: float) -> tuple[float, float]:
    """(accuracy, mean cost) of the greedy numpy policy at one tier and cost weight."""
    n = len(env.emb)
    sim = env.sim(np.arange(n), np.full(n, tier), np.full(n, math.log(weight)))
    run_episodes(policy.act, sim)
    return float(sim.correct.mean()), float(sim.s.spent.mean())


def calibrate_tiers(policy: NeuralPolicy, env: Env, cfg: NeuralPPOConfig) -> dict[str, float]:
    """Per tier, the cheapest cost weight whose held-out accuracy is within
    ``calibration_tolerance`` of the best weight's (all respect the cap by construction)."""
    chosen: dict[str, float] = {}
    for t, name in enumerate(policy.meta.tiers):
        results = [(w, *greedy_results(policy, env, t, w)) for w in cfg.weight_grid]
        best = max(acc for _, acc, _ in results)
        fit = [(cost, w) for w, acc, cost in results if acc >= best - cfg.calibration_tolerance]
        chosen[name] = min(fit)[1]
    return chosen


def _episodes(
    rng: np.random.Generator, n_rows: int, n_tiers: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n random (query row, tier, log cost weight) triples."""
    return (
        rng.integers(0, n_rows, n),
        rng.integers(0, n_tiers, n),
        rng.uniform(*LOG_W_RANGE, n),
    )


def _clone(
    net: Net,
    env: Env,
    meta: NeuralMeta,
    cfg: NeuralPPOConfig,
    bc: BCConfig,
    rng: np.random.Generator,
    gen: torch.Generator,
) -> dict[str, float]:
    """Behaviour-clone the best teachers (see ``assign_teachers``) on the fit queries."""
    bank = teacher_bank(list(meta.experts))
    correct, cost = teacher_rewards(bank, env)
    episodes = _episodes(rng, len(env.emb), len(meta.tiers), bc.episodes)
    teacher = assign_teachers(correct, cost, *episodes, meta.cost_ref_usd, bc.mode)
    demos = demonstrations(
        env,
        bank,
        teacher,
        episodes,
        n_tiers=len(meta.tiers),
        version=meta.feature_version,
        cost_ref=meta.cost_ref_usd,
    )
    return clone_teachers(net, demos, bc, gen)


def _ppo(
    net: Net,
    env: Env,
    meta: NeuralMeta,
    cfg: NeuralPPOConfig,
    rng: np.random.Generator,
    gen: torch.Generator,
    log: bool,
) -> None:
    """PPO fine-tuning (from the cloned policy when there is one)."""
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=1e-5)
    started = time.perf_counter()
    for it in range(cfg.iterations):
        for group in opt.param_groups:  # linear learning-rate decay, as in CleanRL
            group["lr"] = cfg.lr * (1.0 - it / cfg.iterations)
        batch = _rollout(net, env, meta, rng, cfg.episodes_per_iter)
        entropy = cfg.entropy_coef * (1.0 - it / cfg.iterations)
        stats = _update(net, opt, batch, _evaluate_old(net, batch), cfg, gen, entropy)
        if log and (it % 10 == 0 or it == cfg.iterations - 1):
            print(
                f"iter {it:4d} reward {float(batch['score'].mean()):.3f} "
                f"acc {float(batch['correct'].mean()):.3f} "
                f"ent {stats['losses/entropy']:.3f} kl {stats['losses/approx_kl']:.4f} "
                f"{time.perf_counter() - started:.0f}s",
                flush=True,
            )


def _finish(
    net: Net,
    pca_params: dict[str, np.ndarray],
    meta: NeuralMeta,
    envs: tuple[Env, Env],
    cfg: NeuralPPOConfig,
    notes: dict[str, object],
) -> tuple[NeuralPolicy, float]:
    """Export to numpy, calibrate each tier's cost weight (on ``envs[0]``), and score it on
    the held-out queries ``envs[1]``: the mean over tiers of accuracy at that weight."""
    calib, env = envs
    policy = NeuralPolicy({**net.numpy_params(), **pca_params}, meta)
    weights = calibrate_tiers(policy, calib, cfg)
    accs = [greedy_results(policy, env, t, weights[name])[0] for t, name in enumerate(meta.tiers)]
    score = float(np.mean(accs))
    notes = {
        **notes,
        "validation_accuracy": dict(zip(meta.tiers, accs, strict=True)),
        "validation_score": score,
    }
    meta = NeuralMeta(**{**meta.__dict__, "tier_cost_weight": weights, "notes": notes})
    return NeuralPolicy(policy.params, meta), score


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
    """Train on ``split`` minus a held-out share: clone teachers, fine-tune with PPO, and
    keep whichever of the two scores better on the held-out queries (never the test split)."""
    cfg = config or NeuralPPOConfig()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    ids = sorted(q for q, info in table.queries.items() if info.split == split)
    fit_ids, cal_ids = split_ids(ids, cfg.calibration_share)
    dim = len(next(iter(embeddings.values())))
    arrays = episode_arrays(table, experts, fit_ids)
    meta = build_meta(table, experts, tiers, arrays, dim, cfg.proj_dim)
    pca_params = pca(np.stack([embeddings[q] for q in fit_ids]), cfg.proj_dim)
    fit_env = build_env(table, experts, fit_ids, embeddings, meta, pca_params)
    cal_env = build_env(table, experts, cal_ids, embeddings, meta, pca_params)
    calib = (
        cal_env
        if cfg.calibrate_on == "heldout"
        else build_env(table, experts, ids, embeddings, meta, pca_params)
    )
    net = Net(meta.n_features, meta.n_actions, cfg.hidden)
    notes: dict[str, object] = {
        "fit_queries": len(fit_ids),
        "calibration_queries": len(cal_ids),
        "seed": cfg.seed,
    }
    candidates: list[tuple[float, str, NeuralPolicy]] = []
    if cfg.bc is not None:
        stats = _clone(net, fit_env, meta, cfg, cfg.bc, rng, gen)
        bc_notes = {**notes, "stage": "bc", "bc_mode": cfg.bc.mode, **stats}
        policy, score = _finish(net, pca_params, meta, (calib, cal_env), cfg, bc_notes)
        candidates.append((score, "bc", policy))
        if log:
            print(f"bc {stats} held-out {policy.meta.notes['validation_accuracy']}", flush=True)
    if cfg.iterations > 0:
        _ppo(net, fit_env, meta, cfg, rng, gen, log)
        stage = "bc+ppo" if cfg.bc is not None else "ppo"
        ppo_notes = {
            **notes,
            "stage": stage,
            "iterations": cfg.iterations,
            "episodes_per_iter": cfg.episodes_per_iter,
        }
        policy, score = _finish(net, pca_params, meta, (calib, cal_env), cfg, ppo_notes)
        candidates.append((score, stage, policy))
        if log:
            print(f"{stage} held-out {policy.meta.notes['validation_accuracy']}", flush=True)
    if not candidates:
        raise ConfigError("nothing to train: no behaviour cloning and 0 PPO iterations")
    return max(candidates, key=lambda c: c[0])[2]


def train_best_policy(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    tiers: TierSet,
    embeddings: dict[str, np.ndarray],
    configs: Sequence[NeuralPPOConfig],
) -> NeuralPolicy:
    """Train one policy per config (seeds, teacher choices) and keep the best on the held-out
    share of the training split."""
    best: NeuralPolicy | None = None
    for cfg in configs:
        policy = train_neural_policy(table, experts, tiers, embeddings, config=cfg)
        score = float(policy.meta.notes["validation_score"])
        print(
            f"seed {cfg.seed} bc {cfg.bc and cfg.bc.mode} -> {policy.meta.notes['stage']} "
            f"held-out score {score:.4f}",
            flush=True,
        )
        if best is None or score > float(best.meta.notes["validation_score"]):
            best = policy
    if best is None:
        raise ConfigError("train_best_policy needs at least one config")
    return best


def select_best(
    table: OutcomeTable,
    experts: Sequence[ReplayExpert],
    tiers: TierSet,
    embeddings: dict[str, np.ndarray],
    configs: Sequence[NeuralPPOConfig],
) -> NeuralPolicy:
    """Deprecated: ``train_best_policy`` (``corl_graph.training.select_best`` is the warm
    start's choice of recorded runs, a different thing)."""
    warnings.warn(
        "neural_ppo.select_best is deprecated: use train_best_policy",
        DeprecationWarning,
        stacklevel=2,
    )
    return train_best_policy(table, experts, tiers, embeddings, configs)


def _demo_setup(
    embeddings: str,
) -> tuple[OutcomeTable, list[ReplayExpert], TierSet, dict[str, np.ndarray]]:
    from corl_graph.data import demo_experts, demo_tiers, load_demo_table
    from corl_graph.evaluation import load_embeddings

    table = load_demo_table()
    return table, demo_experts(table), demo_tiers(), load_embeddings(embeddings)


def main(argv: Sequence[str] | None = None) -> int:
    """Train on a table with its preset pool and tiers (or the bundled demo table)."""
    import argparse

    from corl_graph.evaluation import preset_experts, preset_for, table_embeddings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", help="canonical outcome table (.jsonl.gz)")
    parser.add_argument("--demo-embeddings", help="train for the bundled demo table with these")
    parser.add_argument("--out", required=True, help="output path without suffix")
    parser.add_argument("--iterations", type=int, default=NeuralPPOConfig.iterations)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="train seed..seed+N-1, keep the best")
    parser.add_argument(
        "--bc-modes",
        default="fixed",
        help="comma-separated teacher choices to try: fixed, per_query, none (PPO from scratch)",
    )
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    if args.demo_embeddings:
        table, experts, tiers, emb = _demo_setup(args.demo_embeddings)
    else:
        table = OutcomeTable.load(args.table)
        preset = preset_for(table.name)
        experts, tiers = preset_experts(table, preset), preset.tiers()
        emb = table_embeddings(table, cache_dir=args.cache_dir)
    configs = [
        NeuralPPOConfig(
            iterations=args.iterations,
            seed=seed,
            bc=None if mode is None else BCConfig(mode=mode),
        )
        for seed in range(args.seed, args.seed + args.seeds)
        for mode in _bc_modes(args.bc_modes)
    ]
    policy = train_best_policy(table, experts, tiers, emb, configs)
    policy.save(args.out)
    print(f"saved {args.out}.npz/.json; tier cost weights {policy.meta.tier_cost_weight}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
