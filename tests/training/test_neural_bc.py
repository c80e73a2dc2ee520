"""The neural router's warm start: behaviour-cloning loss, teachers, teacher choice, reward,
and a small end-to-end training run on a synthetic table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from corl_graph.training.neural import (
    BCConfig,
    assign_teachers,
    bc_loss,
    teacher_act,
    teacher_bank,
)
from corl_graph.training.neural_ppo import NeuralPPOConfig, corl_score, train_neural_policy

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier, TierSet
from corl_graph.experts import OutcomeTable, PriceSheet, replay_experts
from corl_graph.policies._neural import StepBatch, step_features


def test_bc_loss_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 5.0, 1.0]])
    allowed = torch.tensor([[True, True, False], [True, False, True]])
    actions = torch.tensor([1, 2])
    # Row 0: softmax over (1, 2) -> -log(e^2 / (e^1 + e^2)); row 1: over (0, 1), action 2.
    row0 = -(2.0 - math.log(math.exp(1.0) + math.exp(2.0)))
    row1 = -(1.0 - math.log(math.exp(0.0) + math.exp(1.0)))
    assert bc_loss(logits, allowed, actions).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # A disallowed logit, however large, changes nothing.
    logits[0, 2] = 100.0
    assert bc_loss(logits, allowed, actions).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def _state(answer_id: list[list[int]], called: list[list[bool]]) -> StepBatch:
    b, k = len(answer_id), len(answer_id[0])
    ans = np.array(answer_id)
    return StepBatch(
        emb=np.zeros((b, 2), np.float32),
        tier=np.zeros(b, np.int64),
        log_w=np.zeros(b),
        called=np.array(called),
        answer_id=ans,
        replied=ans >= 0,
        out_tokens=np.zeros((b, k)),
        spent=np.zeros(b),
        cap=np.full(b, 1.0),
        est=np.full((b, k), 0.1),
        exhausted=np.zeros(b, bool),
    )


def test_cascade_teacher_calls_cheapest_first_and_votes_on_agreement() -> None:
    bank = teacher_bank(["a", "b", "c"])
    cascade = bank.names.index("cascade(a>b>c,agree=2)")
    always_b = bank.names.index("always(b)")
    s = _state(
        [[-1, -1, -1], [0, -1, -1], [0, 0, -1], [0, 1, -1], [-1, -1, -1], [-1, 3, -1]],
        [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]],
    )
    teacher = np.array([cascade] * 4 + [always_b] * 2)
    # call a; call b; two agree: vote (action K + 1 = 4); disagree: call c; always(b): call
    # b, then answer with it (one answer, action 0).
    assert teacher_act(bank, teacher, s).tolist() == [1, 2, 4, 3, 2, 0]
    assert step_features(s, 1, 2).shape[1] == step_features(s, 1, 1).shape[1] + 5


def test_assign_teachers_fixed_and_per_query() -> None:
    # One tier, two teachers, two queries: teacher 0 cheap and right on query 0 only;
    # teacher 1 dear and right on both.
    correct = np.array([[[1.0, 0.0], [1.0, 1.0]]])
    cost = np.array([[[0.1, 0.1], [1.0, 1.0]]])
    rows, tier = np.array([0, 1, 0]), np.zeros(3, np.int64)
    log_w = np.log([10.0, 10.0, 1e-3])
    fixed = assign_teachers(correct, cost, rows, tier, log_w, 1.0, "fixed")
    assert fixed.tolist() == [0, 0, 1]  # high weight: the cheap one; low: the accurate one
    own = assign_teachers(correct, cost, rows, tier, np.log([1e-3] * 3), 1.0, "per_query")
    assert own.tolist() == [0, 1, 0]  # query 0: both right, the cheaper wins
    with pytest.raises(ConfigError):
        assign_teachers(correct, cost, rows, tier, log_w, 1.0, "oracle")  # type: ignore[arg-type]


def test_corl_score_counts_only_answers_within_the_cap() -> None:
    score = corl_score(
        np.array([1.0, 1.0, 0.0]), np.array([0.5, 2.0, 0.5]), np.ones(3), np.log([0.1] * 3), 1.0
    )
    assert score.tolist() == pytest.approx([0.95, -0.2, -0.05])


def _table() -> OutcomeTable:
    rng = np.random.default_rng(3)
    rows = []
    for i in range(60):
        ref = str(i % 7)
        for m, price, p in (("a", 1.0, 0.55), ("b", 2.0, 0.6), ("c", 20.0, 0.9)):
            ans = ref if rng.random() < p else str(10 + int(rng.integers(50)))
            rows.append(
                dict(
                    query_id=f"q{i}",
                    split="train",
                    model=m,
                    correct=float(ans == ref),
                    answer=ans,
                    reference=ref,
                    response="r",
                    input_tokens=20,
                    output_tokens=10,
                    cost_usd=30 * price / 1e6,
                )
            )
    prices = {m: PriceSheet(p, p) for m, p in (("a", 1.0), ("b", 2.0), ("c", 20.0))}
    return OutcomeTable.from_rows(rows, prices=prices, name="synthetic")


def test_train_clones_then_fine_tunes_and_keeps_the_better() -> None:
    table = _table()
    experts = replay_experts(table)
    tiers = TierSet([BudgetTier("low", 1e-4), BudgetTier("high", 1e-2)])
    rng = np.random.default_rng(0)
    emb = {q: rng.normal(size=8).astype(np.float32) for q in table.queries}
    cfg = NeuralPPOConfig(
        hidden=16,
        iterations=2,
        episodes_per_iter=64,
        proj_dim=4,
        bc=BCConfig(episodes=512, epochs=3, minibatch=128),
        weight_grid=(1e-3, 1.0),
    )
    policy = train_neural_policy(table, experts, tiers, emb, config=cfg, log=False)
    assert policy.meta.feature_version == 2
    assert policy.meta.notes["stage"] in ("bc", "bc+ppo")
    assert 0.0 <= float(policy.meta.notes["validation_score"]) <= 1.0
    assert set(policy.meta.tier_cost_weight) == {"low", "high"}
