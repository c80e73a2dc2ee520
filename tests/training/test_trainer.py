"""PPOTrainer end to end in one process: a rollout through the graph, an update, a
checkpoint that transformers loads, and a resume that restores the optimizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from corl_graph.training import PPOConfig, PPOTrainer
from training_tasks import TinyTask, tiny_ppo_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier

TIERS = (BudgetTier("low", 1e-5), BudgetTier("high", 1e-2))


def _config(task: TinyTask, out: Path, **kw: object) -> PPOConfig:
    return tiny_ppo_config(task, out, **{"tiers": TIERS, "learning_rate": 1e-3, **kw})


@pytest.mark.slow
def test_train_saves_a_loadable_checkpoint_and_resumes(tiny_task: TinyTask, tmp_path: Path) -> None:
    cfg = _config(tiny_task, tmp_path / "run")
    trainer = PPOTrainer(cfg, experts=tiny_task.experts, queries=tiny_task.queries)
    history = trainer.train()
    m = history[0]
    for key in (
        "losses/approx_kl",
        "losses/clipfrac",
        "losses/policy",
        "losses/value",
        "reward/mean",
        "perf/update_tokens_per_s",
    ):
        assert key in m and m[key] == m[key]  # present and not NaN
    assert any(k.startswith("expert_call_ratio/") for k in m)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["iteration"] == 1

    final = tmp_path / "run" / "final"
    lm = AutoModelForCausalLM.from_pretrained(final)  # plain transformers, as vLLM would
    tok = AutoTokenizer.from_pretrained(final)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    trained = trainer.model.lm.state_dict()
    for k, v in lm.state_dict().items():
        assert torch.equal(v, trained[k]), k

    resumed = PPOTrainer(
        _config(tiny_task, tmp_path / "run2", iterations=2, resume_from=str(final)),
        experts=tiny_task.experts,
        queries=tiny_task.queries,
    )
    assert resumed.iteration == 1
    before = trainer.optimizer.state_dict()["state"]
    after = resumed.optimizer.state_dict()["state"]
    assert before.keys() == after.keys()
    for i in before:
        assert torch.equal(before[i]["exp_avg"], after[i]["exp_avg"])
    assert torch.equal(resumed.model.value_head.weight, trainer.model.value_head.weight)
    assert len(resumed.train()) == 1  # only the remaining iteration


def test_config_errors_name_the_fix(tiny_task: TinyTask, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multiple of minibatch_size"):
        _config(tiny_task, tmp_path, episodes_per_iter=6, minibatch_size=4)
    with pytest.raises(ConfigError, match="'ppo', 'grpo' or 'sft'"):
        _config(tiny_task, tmp_path, algo="sac")
    with pytest.raises(ConfigError, match="cpu_offload needs FSDP"):
        _config(tiny_task, tmp_path, cpu_offload=True, fsdp=False)
    with pytest.raises(ConfigError, match="torchrun"):
        PPOTrainer(
            _config(tiny_task, tmp_path, fsdp=True),
            experts=tiny_task.experts,
            queries=tiny_task.queries,
        )
    with pytest.raises(ConfigError, match="experts is empty"):
        _config(tiny_task, tmp_path, experts=())
    with pytest.raises(ConfigError, match="exactly one task"):
        _config(tiny_task, tmp_path, traces="prepared/")
    with pytest.raises(ConfigError, match="training_budget_usd"):
        _config(tiny_task, tmp_path, table=None, traces="p", on_miss="live")
