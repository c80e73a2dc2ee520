"""PPO's advantages and losses as pure functions of tensors (CleanRL / verl style).

Every function takes the response mask as an argument. Shapes: ``B`` sequences, ``T`` action
positions (``T = seq_len - 1``: position ``t`` scores the token at ``t + 1``), ``V`` vocab.
``mask[b, t] = 1`` only where the controller wrote token ``t + 1``; expert replies, prompts and
observations are 0, so they are not time steps of the MDP::

    token        p  p  p  c  c  c  e  e  e  o  c  c
    mask            0  0  1  1  1  0  0  0  0  1  1
    reward                              (score at the last 1, minus KL on every 1)
    GAE walks right to left over the 1s only; the 0s carry the running value through.

Losses are token means over the mask. ``num_tokens`` lets a distributed caller divide by the
number of masked tokens of the *global* batch, so N ranks give the gradient of one process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "KLEstimator",
    "compute_gae",
    "entropy_from_logits",
    "kl_penalty",
    "logprobs_from_logits",
    "masked_mean",
    "masked_whiten",
    "masked_whiten_by_group",
    "policy_loss",
    "token_rewards",
    "value_loss",
]

KLEstimator = Literal["k1", "k2", "k3"]


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, num_tokens: float | None = None
) -> torch.Tensor:
    """Sum of ``x`` where ``mask`` is 1, over ``num_tokens`` (default: the mask's sum)."""
    denom = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=x.dtype)
    return (x * mask).sum() / denom.clamp_min(1.0)


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    *,
    mean: torch.Tensor | None = None,
    var: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """``(x - mean) / std`` over masked entries (0 elsewhere); pass global ``mean``/``var``
    when the batch is split across ranks."""
    if mean is None:
        mean = masked_mean(x, mask)
    if var is None:
        var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def masked_whiten_by_group(
    x: torch.Tensor,
    mask: torch.Tensor,
    group: torch.Tensor,
    num_groups: int,
    *,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """``masked_whiten`` within each group of rows: row ``b`` is whitened with the mean and
    variance of the masked entries of the rows whose ``group[b]`` is its own (``(B, T), (B, T),
    (B,) long -> (B, T)``). ``reduce`` sums the per-group statistics over ranks. A group with a
    single distinct value gets 0 advantages.

    >>> x = torch.tensor([[1.0, 3.0], [10.0, 20.0], [5.0, 0.0]])
    >>> mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    >>> masked_whiten_by_group(x, mask, torch.tensor([0, 1, 0]), 2)[1]
    tensor([-1.,  1.])
    """
    reduce = reduce or (lambda t: t)
    onehot = F.one_hot(group, num_groups).to(x.dtype)  # (B, G)
    n = reduce(onehot.T @ mask.sum(1)).clamp_min(1)  # (G,)
    mean = reduce(onehot.T @ (x * mask).sum(1)) / n  # (G,)
    dev = (x - mean[group].unsqueeze(1)) * mask  # (B, T)
    var = reduce(onehot.T @ (dev**2).sum(1)) / n  # (G,)
    return dev * torch.rsqrt(var + eps)[group].unsqueeze(1) * mask


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probability of each label: ``(B, T, V), (B, T) -> (B, T)``."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    return logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (B, T)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each position's distribution: ``(B, T, V) -> (B, T)``."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    return -(logp.exp() * logp).sum(-1)  # (B, T)


def kl_penalty(
    logp: torch.Tensor, ref_logp: torch.Tensor, kind: KLEstimator = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens' log-probs.

    k1 = log r (unbiased, can be negative), k2 = (log r)^2 / 2, k3 = r' - 1 - log r' with
    r' = ref/policy (Schulman's low-variance, non-negative estimator). ``(B, T) -> (B, T)``.
    """
    log_ratio = logp - ref_logp  # (B, T)
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.pow(2)
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; use 'k1', 'k2' or 'k3'")


def token_rewards(
    scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None, kl_coef: float = 0.0
) -> torch.Tensor:
    """Dense rewards: ``-kl_coef * kl`` on every masked token, plus the episode's score on
    its LAST masked token. ``scores (B,), mask (B, T), kl (B, T) -> (B, T)``."""
    rewards = torch.zeros_like(mask, dtype=torch.float32)  # (B, T)
    if kl is not None and kl_coef:
        rewards = rewards - kl_coef * kl.float() * mask
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, T)
    last = torch.where(mask > 0, positions, -1).max(dim=1).values  # (B,)
    has_action = last >= 0
    rows = torch.arange(mask.shape[0], device=mask.device)[has_action]
    rewards[rows, last[has_action]] += scores[has_action].float()
    return rewards


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the masked (controller) positions only.

    Unmasked positions are skipped: the next value and the running advantage pass through
    them unchanged, so an expert reply between two controller turns is not a time step.
    ``rewards, values, mask (B, T) -> advantages, returns (B, T)``, both 0 where mask is 0.
    """
    B, T = mask.shape
    mask = mask.float()
    next_value = torch.zeros(B, dtype=torch.float32, device=mask.device)  # (B,)
    running = torch.zeros_like(next_value)  # (B,)
    advantages = torch.zeros_like(mask)  # (B, T)
    for t in reversed(range(T)):
        m = mask[:, t]  # (B,)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        new_running = delta + gamma * lam * running
        running = m * new_running + (1 - m) * running
        next_value = m * values[:, t] + (1 - m) * next_value
        advantages[:, t] = m * new_running
    returns = (advantages + values.float()) * mask
    return advantages, returns


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float = 0.2,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate, a token mean over the mask. All inputs ``(B, T)``.

    Returns the loss and diagnostics ``approx_kl`` (k3 of old vs new), ``clipfrac``.
    """
    log_ratio = logp - old_logp  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask, num_tokens)
    with torch.no_grad():
        stats = {
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask),
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float | None = 0.2,
    num_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Half the squared error to the returns, clipped around the old values (PPO2 style).
    All inputs ``(B, T)``."""
    err = (values - returns) ** 2  # (B, T)
    if clip is None:
        return 0.5 * masked_mean(err, mask, num_tokens), {"clipfrac": torch.zeros(())}
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)  # (B, T)
    err_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask, num_tokens)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((err_clipped > err).float(), mask)}
    return loss, stats
