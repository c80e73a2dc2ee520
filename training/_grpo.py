"""GRPO through TRL: ``GRPOTrainer`` with a ``rollout_func`` that runs our routing graph, so
users without memory for a value model can train the controller too.

Per generation round, TRL hands the rollout function each prompt ``num_generations`` times;
every prompt is one (query, tier) pair, so a group shares its budget token and GRPO's
group-relative advantage compares like with like. The function runs the graph with an
``HFPolicy`` over TRL's live model and returns, per run::

    prompt_ids       the first prompt segment (system + user + assistant header)
    completion_ids   everything after it: controller turns and observations, in order
    env_mask         1 on controller tokens, 0 on expert replies / observations
    logprobs         the sampling log-probs (0 where env_mask is 0)
    corl_reward      the same reward as PPO (verifier + budget gate/grade + format penalty),
                     shaped by the tiers' Lagrange multipliers under cost_constraint="lagrange"

One iteration is one generation round (``episodes_per_iter`` runs, ``num_generations`` per
(query, tier) group) and one optimizer update over it (gradient accumulation over
minibatches; ``ppo_epochs`` > 1 reuses the round for that many updates). After every round
the multipliers take one dual-ascent step on the round's spend per tier, and the round's
per-tier metrics (``reward/<tier>``, ``cost_usd/<tier>``, ``target_usd/<tier>``,
``lagrange/<tier>``, ``expert_call_ratio/<tier>``, ``format_error_rate/<tier>``) and the
share of groups without reward variance (``grpo/zero_std_groups``: no learning signal)
go to ``metrics.jsonl`` with TRL's own lines.

Rewards, experts, tiers and checkpoints are PPO's: ``config`` is a ``GRPOConfig`` (the
fields PPO and GRPO share, plus ``num_generations`` and TRL's own ``trl_options``);
``final/`` is a ``save_pretrained`` folder that transformers and vLLM load.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from corl_graph._exceptions import ConfigError
from corl_graph.budget import InMemoryLedger, TenantBudget, TierSet
from corl_graph.experts import Expert
from corl_graph.graph import Router, RouterConfig
from corl_graph.protocol import render_user_prompt
from corl_graph.trajectories import Trajectory

from ._config import GRPOConfig
from ._hf_policy import HFPolicy
from ._lagrange import TierMultipliers
from ._metrics import MetricsWriter, require_tensorboard
from ._rewards import RewardFn, reward_from_config
from ._rollout import Episode, QuerySpec
from ._tier_metrics import (
    constraint_metrics,
    episode_metrics,
    multipliers_for,
    shaped_scores,
    warn_unaffordable_tiers,
)
from ._traces import CacheCounters, TracesTask, training_task

__all__ = ["GraphRollout", "make_grpo_trainer", "split_for_grpo", "train_grpo"]


def split_for_grpo(trajectory: Trajectory) -> dict[str, list[Any]]:
    """A run's tokens as TRL's multi-turn rollout: the first segment is the prompt, the rest
    the completion with ``env_mask`` (the trajectory's loss mask, 1 = controller)."""
    segs = trajectory.segments
    if not segs or not any(s.trainable for s in segs):
        raise ConfigError("a GRPO rollout needs a run with controller tokens (HFPolicy)")
    rest = segs[1:]
    return {
        "prompt_ids": list(segs[0].token_ids),
        "completion_ids": [t for s in rest for t in s.token_ids],
        "env_mask": [m for s in rest for m in s.loss_mask],
        "logprobs": [lp for s in rest for lp in (s.logprobs or (0.0,) * len(s.token_ids))],
    }


class GraphRollout:
    """TRL's ``rollout_func``: each prompt (one per (query, tier), repeated per generation)
    becomes a run of the routing graph with the trainer's current model as controller."""

    def __init__(
        self,
        *,
        tokenizer: PreTrainedTokenizerBase,
        experts: Sequence[Expert],
        queries: Sequence[QuerySpec],
        tiers: TierSet,
        reward_fn: RewardFn,
        max_steps: int,
        max_new_tokens: int,
        temperature: float,
        seed: int = 0,
        multipliers: TierMultipliers | None = None,
        controller: str | None = None,
        target_margin: float = 0.0,
    ):
        self.multipliers, self.controller = multipliers, controller
        self.target_margin = target_margin
        self.last_metrics: dict[str, float] = {}
        self.tokenizer, self.experts, self.tiers = tokenizer, list(experts), tiers
        self.reward_fn, self.max_steps = reward_fn, max_steps
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed
        self.prompts: dict[str, tuple[QuerySpec, str]] = {}
        for q in queries:
            for tier in tiers:
                text = render_user_prompt(q.text, tier, tiers[tier].max_usd_per_query)
                self.prompts.setdefault(text, (q, tier))
        self.calls = 0

    def dataset_rows(self) -> list[dict[str, str]]:
        return [{"prompt": p} for p in self.prompts]

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        self.calls += 1
        policy = HFPolicy(
            model,
            self.tokenizer,
            name="grpo",
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            seed=self.seed + self.calls,
        )
        router = Router(
            RouterConfig(
                experts=self.experts,
                policy=policy,
                tiers=self.tiers,
                ledger=InMemoryLedger(default_budget=TenantBudget("*", 1e12, "total")),
                max_steps=self.max_steps,
                default_tier=next(iter(self.tiers)),
            )
        )
        specs = [self._spec(p) for p in prompts]
        results = asyncio.run(_run_all(router, specs))
        out: dict[str, list[Any]] = {
            k: [] for k in ("prompt_ids", "completion_ids", "env_mask", "logprobs")
        }
        episodes = [
            Episode(traj, q.reference, tier, self.reward_fn(traj, q.reference, self.tiers[tier]))
            for (q, tier), traj in zip(specs, results, strict=True)
        ]
        for traj in results:
            for k, v in split_for_grpo(traj).items():
                out[k].append(v)
        scores = shaped_scores(episodes, self.tiers, self.multipliers, margin=self.target_margin)
        out["corl_reward"] = list(scores)
        out["corl_correct"] = [e.reward.correct for e in episodes]
        out["corl_cost_usd"] = [e.trajectory.cost_usd for e in episodes]
        out["corl_expert_calls"] = [e.trajectory.expert_calls for e in episodes]
        metrics = episode_metrics(episodes, list(self.tiers), self.controller)
        metrics.update(
            constraint_metrics(
                metrics, self.tiers, self.multipliers, scores, margin=self.target_margin
            )
        )
        metrics["grpo/zero_std_groups"] = zero_std_share([p for p in prompts], scores)
        self.last_metrics = metrics
        return out

    def _spec(self, prompt: Any) -> tuple[QuerySpec, str]:
        text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        if text not in self.prompts:
            raise ConfigError("GRPO got a prompt that is not one of GraphRollout.dataset_rows()")
        return self.prompts[text]


async def _run_all(router: Router, specs: list[tuple[QuerySpec, str]]) -> list[Trajectory]:
    runs = await asyncio.gather(
        *(router.arun(q.text, tier=tier, query_id=q.query_id) for q, tier in specs)
    )
    return [r.trajectory for r in runs]


def zero_std_share(prompts: Sequence[Any], scores: Sequence[float]) -> float:
    """Share of groups (runs of the same prompt) whose scores all agree: GRPO's advantage is
    0 there, so they teach nothing.

    >>> zero_std_share(["a", "a", "b", "b"], [1.0, 1.0, 0.0, 1.0])
    0.5
    """
    groups: dict[str, list[float]] = {}
    for p, s in zip(prompts, scores, strict=True):
        groups.setdefault(repr(p), []).append(s)
    flat = sum(1 for g in groups.values() if max(g) - min(g) < 1e-9)
    return flat / max(len(groups), 1)


def corl_graph_reward(prompts: list[Any], completions: list[Any], **kw: Any) -> list[float | None]:
    """TRL reward function: the graph reward the rollout already computed."""
    # TRL's reward type: None would mean "no reward for this sample"; every rollout has one
    return [float(r) for r in kw["corl_reward"]]


def _distributed_settings(cfg: GRPOConfig) -> dict[str, Any]:
    """FSDP2 through accelerate under torchrun, as PPO shards (``fsdp`` None: on with more
    than one process); ``fsdp=False`` with several processes is accelerate's DDP. Accelerate
    (1.15) shards on GPUs only: on CPUs it ignores the FSDP plugin and runs DDP (each process
    holds the whole model), which ``corl-graph train`` reports."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    fsdp = cfg.fsdp if cfg.fsdp is not None else world > 1
    if not fsdp:
        return {}
    if world < 2:
        raise ConfigError(
            "fsdp=True needs several processes: launch with torchrun --nproc_per_node=N"
        )
    return {"fsdp": True, "fsdp_config": {"version": 2, "cpu_offload": cfg.cpu_offload}}


def make_grpo_trainer(
    config: GRPOConfig,
    *,
    lm: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    experts: Sequence[Expert] | None = None,
    queries: Sequence[QuerySpec] | None = None,
    reward_fn: RewardFn | None = None,
) -> Any:
    """A ``trl.GRPOTrainer`` for ``config``. One iteration = one generation round of
    ``episodes_per_iter`` runs (prompts x ``num_generations``) and ``ppo_epochs`` optimizer
    updates over it (gradients accumulated over minibatches of ``minibatch_size`` runs);
    ``iterations`` rounds in all. ``kl_coef`` is GRPO's beta, ``clip`` its epsilon;
    ``trl_options`` go to TRL's ``GRPOConfig`` as they are."""
    cfg = config
    if not isinstance(cfg, GRPOConfig):
        raise ConfigError(
            f"make_grpo_trainer takes a GRPOConfig, got {type(cfg).__name__}: build "
            "GRPOConfig(...) with the same fields (num_generations is one of them)"
        )
    if cfg.tensorboard:
        require_tensorboard()
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is documented here
    from datasets import Dataset

    # trl's top level does not re-export these for mypy
    from trl.trainer.grpo_config import GRPOConfig as TRLGRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    tok = tokenizer or AutoTokenizer.from_pretrained(cfg.model)
    model = lm or AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
    ex, qs, task = training_task(cfg, experts, queries)
    warn_unaffordable_tiers(ex, cfg.tier_set, qs)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.minibatch_size % world:
        raise ConfigError(
            f"minibatch_size ({cfg.minibatch_size}) must be a multiple of the number of "
            f"processes ({world})"
        )
    rollout = GraphRollout(
        tokenizer=tok,
        experts=ex,
        queries=qs,
        tiers=cfg.tier_set,
        reward_fn=reward_fn or reward_from_config(cfg.reward_config),
        max_steps=cfg.max_steps,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        seed=cfg.seed,
        multipliers=_multipliers(cfg),
        controller=cfg.controller_expert,
        target_margin=cfg.target_margin,
    )
    rows = rollout.dataset_rows()
    random.Random(cfg.seed).shuffle(rows)
    accumulate = cfg.episodes_per_iter // cfg.minibatch_size
    settings: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.minibatch_size // world,
        gradient_accumulation_steps=accumulate,
        num_generations=cfg.num_generations,
        steps_per_generation=accumulate,
        num_iterations=cfg.ppo_epochs,
        max_steps=cfg.iterations * cfg.ppo_epochs,
        learning_rate=cfg.learning_rate,
        beta=cfg.kl_coef,
        epsilon=cfg.clip,
        temperature=cfg.temperature,
        max_completion_length=cfg.max_seq_len,
        max_grad_norm=cfg.max_grad_norm,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        logging_steps=1,
        report_to=["tensorboard"] if cfg.tensorboard else [],
        save_strategy="steps" if cfg.save_every else "no",
        save_steps=max(cfg.save_every * cfg.ppo_epochs, 1),
        use_cpu=not torch.cuda.is_available(),
        # the same precision as PPO: TRL would autocast to bf16 by default, on a CPU too
        # (emulated without bf16 hardware, many times slower than float32 there)
        bf16=cfg.mixed_precision == "bf16",
        fp16=cfg.mixed_precision == "fp16",
        activation_checkpointing=cfg.gradient_checkpointing,
        disable_tqdm=not cfg.progress,
    )
    settings.update(_distributed_settings(cfg))
    settings.update(cfg.trl_options)
    return GRPOTrainer(
        model=model,
        reward_funcs=corl_graph_reward,
        args=TRLGRPOConfig(**settings),
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        rollout_func=rollout,
        callbacks=[_metrics_callback(cfg, ex, rollout, task)],
    )


LAGRANGE_FILE = "lagrange.json"  # the multipliers, beside TRL's checkpoint files


def _multipliers(cfg: GRPOConfig) -> TierMultipliers | None:
    """Fresh multipliers, or those of ``resume_from`` (a checkpoint folder of this run)."""
    multipliers = multipliers_for(cfg)
    saved = Path(cfg.resume_from or "") / LAGRANGE_FILE
    if multipliers is not None and cfg.resume_from and saved.is_file():
        multipliers = TierMultipliers.from_state_dict(json.loads(saved.read_text()))
    return multipliers


def _metrics_callback(
    cfg: GRPOConfig, experts: Sequence[Expert], rollout: GraphRollout, task: TracesTask | None
) -> Any:
    """TRL's log lines, the last round's per-tier metrics and the cached experts' counters
    to ``metrics.jsonl`` as PPO's; the multipliers saved with every checkpoint; the traces
    task's training-budget ledger (if this trainer opened one) closed when training ends,
    as PPO closes it."""
    from transformers import TrainerCallback

    writer = MetricsWriter(cfg.metrics_file or Path(cfg.output_dir) / "metrics.jsonl")
    counters = CacheCounters(experts)

    class _Metrics(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if state.is_world_process_zero and logs:
                scalars = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
                round_metrics, rollout.last_metrics = rollout.last_metrics, {}
                writer.write(
                    int(state.global_step), {**scalars, **round_metrics, **counters.delta()}
                )

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                save_multipliers(rollout, folder)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            writer.close()
            if task is not None:
                task.close()

    return _Metrics()


def save_multipliers(rollout: GraphRollout, folder: str | Path) -> None:
    """Write the rollout's multipliers (if any) as ``lagrange.json`` in ``folder``."""
    if rollout.multipliers is not None:
        path = Path(folder) / LAGRANGE_FILE
        path.write_text(json.dumps(rollout.multipliers.state_dict()))


def train_grpo(config: GRPOConfig, **kwargs: Any) -> tuple[Any, Path]:
    """Build, train, and save ``OUTPUT_DIR/final`` (a ``save_pretrained`` folder with the
    tokenizer); returns the trainer and that folder."""
    trainer = make_grpo_trainer(config, **kwargs)
    trainer.train(resume_from_checkpoint=config.resume_from)
    final = Path(config.output_dir) / "final"
    trainer.save_model(str(final))
    trainer.processing_class.save_pretrained(str(final))
    rollout = trainer.rollout_func
    if trainer.accelerator.is_main_process and isinstance(rollout, GraphRollout):
        save_multipliers(rollout, final)
    return trainer, final
