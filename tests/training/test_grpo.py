"""GRPO through TRL's GRPOTrainer with our graph as rollout_func: the env_mask split, and one
optimizer step on a tiny controller that leaves a checkpoint transformers loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corl_graph.training import (
    GRPOConfig,
    QuerySpec,
    RewardBreakdown,
    split_for_grpo,
    train_grpo,
)
from traces_fixtures import TIERS, tiny_controller, toy_experts, toy_table
from transformers import AutoModelForCausalLM

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier
from corl_graph.trajectories import Segment, Trajectory

# TRL 1.16 reads transformers' deprecated alias; a third-party warning, filtered by name.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


def test_split_puts_the_first_segment_in_the_prompt_and_masks_observations() -> None:
    t = Trajectory("q", "low", "t", "q1")
    t.segments = [
        Segment("prompt", "p", (1, 2, 3)),
        Segment("controller", "c", (4, 5), (-0.5, -0.25)),
        Segment("observation", "o", (6, 7, 8)),
        Segment("controller", "c", (9,), (-1.0,)),
    ]
    out = split_for_grpo(t)
    assert out == {
        "prompt_ids": [1, 2, 3],
        "completion_ids": [4, 5, 6, 7, 8, 9],
        "env_mask": [1, 1, 0, 0, 0, 1],
        "logprobs": [-0.5, -0.25, 0.0, 0.0, 0.0, -1.0],
    }
    with pytest.raises(ConfigError, match="controller tokens"):
        split_for_grpo(Trajectory("q", "low", "t", "q1"))


def _config(out: Path, **kw: object) -> GRPOConfig:
    base: dict[str, object] = dict(
        model="unused",
        output_dir=str(out),
        table="unused",
        experts=("cheap", "strong"),
        tiers=tuple(TIERS.values()),
        iterations=1,
        episodes_per_iter=4,
        minibatch_size=4,
        ppo_epochs=1,
        max_new_tokens=6,
        max_steps=2,
        learning_rate=1e-2,
        progress=False,
        kl_coef=0.0,
    )
    base.update(kw)
    return GRPOConfig(**base)  # type: ignore[arg-type]


def test_one_grpo_step_through_the_graph(tmp_path: Path) -> None:
    table = toy_table(4)
    lm, tok = tiny_controller(table)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    queries = [QuerySpec(q, i.prompt or "", i.reference) for q, i in table.queries.items()]

    # A random controller earns the same format penalty on every run (zero advantage), so
    # the test rewards the sampled log-prob instead: it differs within every group.
    def reward(t: Trajectory, ref: str | None, tier: BudgetTier) -> RewardBreakdown:
        score = sum(lp for s in t.segments for lp in s.logprobs)
        return RewardBreakdown(score, 0.0, t.cost_usd, 0.0, True)

    trainer, final = train_grpo(
        _config(tmp_path / "run", num_generations=2),
        lm=lm,
        tokenizer=tok,
        experts=toy_experts(table),
        queries=queries,
        reward_fn=reward,
    )
    assert trainer.state.global_step == 1
    assert trainer.rollout_func.calls == 1
    # GRPOConfig.mixed_precision="no": float32 like PPO, not TRL's default bf16 autocast
    assert not trainer.args.bf16 and not trainer.args.fp16
    logged = trainer.state.log_history[0]
    assert logged["reward_std"] > 0 and "completions/mean_length" in logged
    loaded = AutoModelForCausalLM.from_pretrained(final)
    changed = [k for k, v in loaded.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and (final / "tokenizer.json").is_file()


def test_groups_must_fit_in_a_step(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multiples of num_generations"):
        _config(tmp_path, episodes_per_iter=6, minibatch_size=2, num_generations=4)


def test_grpo_lagrange_logs_per_tier_metrics_and_saves_multipliers(tmp_path: Path) -> None:
    import json

    table = toy_table(4)
    lm, tok = tiny_controller(table)
    queries = [QuerySpec(q, i.prompt or "", i.reference) for q, i in table.queries.items()]
    tiers = tuple(
        BudgetTier(t.name, t.max_usd_per_query, target_usd_per_query=t.max_usd_per_query / 2)
        for t in TIERS.values()
    )
    trainer, final = train_grpo(
        _config(
            tmp_path / "run",
            tiers=tiers,
            iterations=2,
            cost_constraint="lagrange",
            num_generations=2,
        ),
        lm=lm,
        tokenizer=tok,
        experts=toy_experts(table),
        queries=queries,
    )
    assert trainer.state.global_step == 2  # one iteration = one update
    assert trainer.rollout_func.calls == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    with_round = [m for m in lines if "grpo/zero_std_groups" in m]
    assert len(with_round) == 2
    m = with_round[-1]
    assert 0.0 <= m["grpo/zero_std_groups"] <= 1.0
    for name in TIERS:
        assert f"lagrange/{name}" in m and f"target_usd/{name}" in m
    saved = json.loads((final / "lagrange.json").read_text())
    assert saved["values"] == trainer.rollout_func.multipliers.values
