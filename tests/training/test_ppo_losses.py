"""The pure PPO functions on small hand-computed tensors."""

from __future__ import annotations

import math

import pytest
import torch
from corl_graph.training import (
    compute_gae,
    entropy_from_logits,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    masked_whiten_by_group,
    policy_loss,
    token_rewards,
    value_loss,
)


def test_masked_mean_ignores_masked_entries_and_takes_a_global_count() -> None:
    x = torch.tensor([[1.0, 100.0, 3.0]])
    m = torch.tensor([[1.0, 0.0, 1.0]])
    assert masked_mean(x, m).item() == 2.0
    assert masked_mean(x, m, num_tokens=4).item() == 1.0


def test_masked_whiten_zero_mean_unit_variance_on_mask() -> None:
    x = torch.tensor([[1.0, 50.0, 3.0, 5.0]])
    m = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    w = masked_whiten(x, m)
    assert w[0, 1] == 0
    assert masked_mean(w, m).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_mean(w**2, m).item() == pytest.approx(1.0, abs=1e-5)


def test_masked_whiten_by_group_on_hand_computed_numbers() -> None:
    # rows 0 and 2 are one tier (tokens 1, 3, 5: mean 3, variance 8/3), row 1 another
    # (10, 20: mean 15, variance 25); the masked entry stays 0
    x = torch.tensor([[1.0, 3.0], [10.0, 20.0], [5.0, 99.0]])
    m = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    w = masked_whiten_by_group(x, m, torch.tensor([0, 1, 0]), 2)
    s = (8 / 3) ** 0.5
    assert w.tolist()[0] == pytest.approx([-2 / s, 0.0], abs=1e-6)
    assert w.tolist()[1] == pytest.approx([-1.0, 1.0], abs=1e-6)
    assert w.tolist()[2] == pytest.approx([2 / s, 0.0], abs=1e-6)
    # over the whole batch the second tier's large values would dominate instead
    assert masked_whiten(x, m)[0, 1].item() < -0.5
    # one group is plain whitening; a reduce (over ranks) sees and returns per-group sums
    one = masked_whiten_by_group(x, m, torch.tensor([0, 0, 0]), 1)
    assert torch.allclose(one, masked_whiten(x, m), atol=1e-6)
    seen: list[torch.Tensor] = []
    masked_whiten_by_group(x, m, torch.tensor([0, 1, 0]), 2, reduce=lambda t: seen.append(t) or t)
    assert [t.tolist() for t in seen[:2]] == [[3.0, 2.0], [9.0, 30.0]]


def test_masked_whiten_by_group_single_valued_group_gets_zero() -> None:
    x = torch.tensor([[2.0, 2.0], [1.0, 3.0]])
    m = torch.ones(2, 2)
    w = masked_whiten_by_group(x, m, torch.tensor([0, 1]), 3)  # group 2 is empty
    assert w[0].tolist() == [0.0, 0.0]
    assert w[1].tolist() == pytest.approx([-1.0, 1.0], abs=1e-6)


def test_token_rewards_put_the_score_on_the_last_controller_token_and_kl_on_all() -> None:
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    kl = torch.full((2, 6), 0.5)
    r = token_rewards(torch.tensor([1.0, 7.0]), mask, kl, kl_coef=0.1)
    assert r[0].tolist() == pytest.approx([0.0, -0.05, -0.05, 0.0, 0.95, 0.0])
    assert r[1].tolist() == [0.0] * 6  # no controller token: nothing to credit


def test_gae_skips_expert_positions_lambda_one_gives_return_minus_value() -> None:
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 9.0, 0.2, 0.4]])  # 9.0 sits on an expert token: never used
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert adv[0].tolist() == pytest.approx([0.5, 0.0, 0.8, 0.6])
    assert ret[0].tolist() == pytest.approx([1.0, 0.0, 1.0, 1.0])


def test_gae_with_discount_by_hand() -> None:
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 9.0, 0.2, 0.4]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    adv, _ = compute_gae(rewards, values, mask, gamma=0.9, lam=0.5)
    a3 = 1.0 - 0.4
    a2 = (0.9 * 0.4 - 0.2) + 0.45 * a3
    a0 = (0.9 * 0.2 - 0.5) + 0.45 * a2
    assert adv[0].tolist() == pytest.approx([a0, 0.0, a2, a3])


def test_policy_loss_clips_by_hand() -> None:
    old = torch.zeros(1, 4)
    logp = torch.tensor([[0.5, -0.5, 0.5, 3.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the wild last token is masked out
    loss, stats = policy_loss(logp, old, adv, mask, clip=0.2)
    r = math.exp(0.5)
    # token 0: ratio 1.65, A>0 -> clipped at 1.2; token 1: ratio 0.61, A>0 -> unclipped;
    # token 2: ratio 1.65, A<0 -> unclipped (pessimistic max)
    expected = (-1.2 + -math.exp(-0.5) + r) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)
    k3 = ((r - 1 - 0.5) + (math.exp(-0.5) - 1 + 0.5) + (r - 1 - 0.5)) / 3
    assert stats["approx_kl"].item() == pytest.approx(k3, rel=1e-5)


def test_value_loss_clipped_by_hand() -> None:
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    ret = torch.tensor([[2.0, 1.0]])
    mask = torch.ones(1, 2)
    loss, stats = value_loss(values, old, ret, mask, clip=0.2)
    # token 0: unclipped err (1-2)^2 = 1, clipped value 0.2 -> err 3.24, max = 3.24
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.0) / 2)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    loss_free, _ = value_loss(values, old, ret, mask, clip=None)
    assert loss_free.item() == pytest.approx(0.5 * (1.0 + 1.0) / 2)


def test_kl_estimators() -> None:
    logp = torch.tensor([[math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25)]])
    lr = math.log(2.0)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(lr)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * lr**2)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 - 1 + lr)
    assert kl_penalty(ref, ref, "k3").item() == 0.0
    with pytest.raises(ValueError, match="k1"):
        kl_penalty(logp, ref, "k9")  # type: ignore[arg-type]


def test_logprobs_and_entropy_from_logits() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    assert logprobs_from_logits(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.25))
    h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert entropy_from_logits(logits).item() == pytest.approx(h)


def test_expert_token_logprob_changes_no_gradient() -> None:
    """The point of the mask: what the model thinks of an expert's tokens must not train it."""
    torch.manual_seed(0)
    base = torch.randn(2, 6, 5)
    labels = torch.randint(0, 5, (2, 6))
    mask = torch.tensor([[1, 1, 0, 0, 1, 0], [0, 1, 1, 1, 0, 0]], dtype=torch.float32)
    old = torch.randn(2, 6) - 1.5
    adv = torch.randn(2, 6)

    def grad_with(logits_in: torch.Tensor, old_logp: torch.Tensor) -> torch.Tensor:
        logits = logits_in.clone().requires_grad_(True)
        loss, _ = policy_loss(logprobs_from_logits(logits, labels), old_logp, adv, mask)
        loss = loss - 0.01 * masked_mean(entropy_from_logits(logits), mask)
        loss.backward()
        assert logits.grad is not None
        return logits.grad

    g = grad_with(base, old)
    expert = mask == 0
    moved = base.clone()
    moved[expert] += 10.0 * torch.randn_like(moved[expert])  # the expert tokens' log-probs change
    old_moved = old.clone()
    old_moved[expert] = 0.0
    g2 = grad_with(moved, old_moved)
    assert torch.equal(g, g2)
    assert torch.count_nonzero(g[expert]) == 0
    assert torch.count_nonzero(g[~expert]) > 0
