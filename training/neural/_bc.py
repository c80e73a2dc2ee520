"""Behaviour cloning of teacher policies: the warm start of the neural router (BoPO-style).

PPO from a near-uniform policy on 700-1000 training queries finds the cheap end (one strong
cheap call) but not escalation by agreement, and it memorises which cheap model was right on
each training query. Cloning the best fixed teacher per (tier, cost weight) first puts the
policy on the cascade frontier; PPO then only fine-tunes it. The value head is fitted to the
teachers' episode rewards at the same time, so PPO starts with a baseline that fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from corl_graph.policies import action_mask, step_features

from .._rewards import cost_weighted_reward
from ._env import Env, Net
from ._teachers import TeacherBank, TeacherMode, teacher_act

__all__ = ["BCConfig", "Demos", "bc_loss", "clone_teachers", "demonstrations"]


@dataclass(frozen=True)
class BCConfig:
    """Behaviour-cloning settings: episodes of demonstrations, and the fit."""

    episodes: int = 16384
    epochs: int = 20
    minibatch: int = 1024
    lr: float = 3e-3
    value_coef: float = 0.5
    mode: TeacherMode = "fixed"


@dataclass
class Demos:
    """S (state, action) pairs from teacher episodes, with the episode's reward."""

    x: torch.Tensor  # (S, D) features
    allowed: torch.Tensor  # (S, A) bool
    a: torch.Tensor  # (S,) teacher action
    ret: torch.Tensor  # (S,) the episode's final reward (undiscounted return)


def demonstrations(
    env: Env,
    bank: TeacherBank,
    teacher: np.ndarray,
    episodes: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    n_tiers: int,
    version: int,
    cost_ref: float,
) -> Demos:
    """Run episodes (rows, tier, log_w) with their teachers; keep the live steps."""
    rows, tier, log_w = episodes
    sim = env.sim(rows, tier, log_w)
    xs, allowed, acts, owner = [], [], [], []
    for _ in range(sim.k + 2):
        if sim.done.all():
            break
        s = sim.state()
        live = np.flatnonzero(~sim.done)
        a = teacher_act(bank, teacher, s)
        xs.append(step_features(s, n_tiers, version)[live])
        allowed.append(action_mask(s)[live])
        acts.append(a[live])
        owner.append(live)
        sim.step(a)
    score = cost_weighted_reward(
        sim.correct, sim.s.spent, sim.s.cap, weight=np.exp(log_w), cost_ref_usd=cost_ref
    )
    idx = np.concatenate(owner)
    return Demos(
        torch.from_numpy(np.concatenate(xs)),
        torch.from_numpy(np.concatenate(allowed)),
        torch.from_numpy(np.concatenate(acts)),
        torch.from_numpy(score[idx].astype(np.float32)),
    )


def bc_loss(logits: torch.Tensor, allowed: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the teacher's actions under the masked policy: (S, A), (S, A), (S,).

    Masking first makes it the log-likelihood of the policy the simulator and the graph run
    (illegal actions get no probability), so no mass is spent pushing them down."""
    masked = logits.masked_fill(~allowed, -1e9)
    return F.cross_entropy(masked, actions)


def clone_teachers(net: Net, demos: Demos, cfg: BCConfig, gen: torch.Generator) -> dict[str, float]:
    """Fit the policy to the teachers' actions and the value head to their returns."""
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=1e-5)
    n = len(demos.a)
    steps = cfg.epochs * math.ceil(n / cfg.minibatch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / max(steps, 1))
    pl = vl = torch.zeros(())
    for _ in range(cfg.epochs):
        for idx in torch.randperm(n, generator=gen).split(cfg.minibatch):
            pl = bc_loss(net.pi(demos.x[idx]), demos.allowed[idx], demos.a[idx])
            vl = F.mse_loss(net.v(demos.x[idx]).squeeze(-1), demos.ret[idx])
            loss = pl + cfg.value_coef * vl
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
    with torch.no_grad():
        pred = net.pi(demos.x).masked_fill(~demos.allowed, -1e9).argmax(1)
        agreement = float((pred == demos.a).float().mean())
    return {"bc/policy": pl.item(), "bc/value": vl.item(), "bc/agreement": agreement}
