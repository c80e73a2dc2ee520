"""PPOTrainer: rollouts through the routing graph, then clipped-PPO updates with a value head,
GAE over controller tokens only and a KL penalty to a frozen reference, under FSDP2 or not.

One iteration::

    sync weights (to the rollout copy, or to the vLLM server with rollout="vllm")
      → rollout (HFPolicy or VLLMPolicy in the Router, tiers drawn per episode) → rewards
      → old log-probs / values / reference log-probs (no grad) → KL-shaped token rewards
      → GAE over the action mask → ppo_epochs x minibatches of clipped losses → AdamW step
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections import defaultdict
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
from corl_graph.experts import Expert
from corl_graph.graph import Router, RouterConfig

from ._checkpoint import load_training_state, save_checkpoint
from ._config import PPOConfig
from ._fsdp import all_reduce_sum, init_distributed, shard, unwrapped_state_dict
from ._hf_policy import HFPolicy
from ._lagrange import TierMultipliers
from ._metrics import MetricsWriter
from ._model import ActorCritic
from ._ppo_losses import (
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
from ._rewards import RewardFn, reward_from_config
from ._rollout import (
    Episode,
    QuerySpec,
    RolloutBatch,
    build_batch,
    collect,
)
from ._tier_metrics import (
    constraint_metrics,
    episode_metrics,
    multipliers_for,
    shaped_scores,
    warn_unaffordable_tiers,
)
from ._traces import CacheCounters, training_task
from ._vllm_rollout import VLLMPolicy

__all__ = ["PPOTrainer"]


class PPOTrainer:
    """Train an ``HFPolicy`` controller with PPO on graph runs. Works alone or under torchrun.

    Everything comes from ``config``; tests and benchmarks may inject the model, tokenizer,
    experts, queries or reward function instead.
    """

    def __init__(
        self,
        config: PPOConfig,
        *,
        lm: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        experts: Sequence[Expert] | None = None,
        queries: Sequence[QuerySpec] | None = None,
        reward_fn: RewardFn | None = None,
    ):
        self.config = config
        self.info = init_distributed(config)
        torch.manual_seed(config.seed)  # identical initial weights (value head) on every rank
        source = config.resume_from or config.model
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(source)
        lm = lm or AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        self.ref_lm = self._reference(lm)
        self.plain_lm = copy.deepcopy(lm) if self.info.fsdp else lm
        if config.gradient_checkpointing:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = ActorCritic(lm).to(self.info.device)
        if self.info.fsdp:
            shard(self.model, self.model.decoder_layers(), config, self.info)
        self.optimizer = self._optimizer()
        self.iteration = 0
        self.multipliers = multipliers_for(config)
        if config.resume_from:
            state = load_training_state(config.resume_from, self.model, self.optimizer)
            self.iteration = int(state["iteration"])
            if self.multipliers is not None and "lagrange" in state:
                self.multipliers = TierMultipliers.from_state_dict(state["lagrange"])
        self._setup_task(experts, queries, reward_fn)
        self._shuffle = torch.Generator().manual_seed(config.seed + 7)

    # ------------------------------------------------------------------ setup
    def _reference(self, lm: PreTrainedModel) -> PreTrainedModel | None:
        if self.config.kl_coef == 0:
            return None
        ref: PreTrainedModel
        if self.config.resume_from:  # KL is to the run's starting model, not the checkpoint
            ref = AutoModelForCausalLM.from_pretrained(self.config.model, dtype=torch.float32)
        else:
            ref = copy.deepcopy(lm)
        ref.requires_grad_(False).eval().to(self.info.device)
        if self.info.fsdp:
            shard(ref, list(ref.get_decoder().layers), self.config, self.info, trainable=False)
        return ref

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        head = list(self.model.value_head.parameters())
        head_ids = {id(p) for p in head}
        body = [p for p in self.model.parameters() if id(p) not in head_ids and p.requires_grad]
        return torch.optim.AdamW(
            [
                {"params": body, "lr": cfg.learning_rate},
                {"params": head, "lr": cfg.value_learning_rate or cfg.learning_rate},
            ],
            weight_decay=cfg.weight_decay,
        )

    def _setup_task(
        self,
        experts: Sequence[Expert] | None,
        queries: Sequence[QuerySpec] | None,
        reward_fn: RewardFn | None,
    ) -> None:
        cfg = self.config
        # the traces task's training-budget ledger is closed when train() ends
        experts, self.queries, self._traces = training_task(
            cfg, experts, queries, world_size=self.info.world_size
        )
        warn_unaffordable_tiers(experts, cfg.tier_set, self.queries)
        self.cache_counters = CacheCounters(experts)  # hits / misses / live spend, if cached
        self.policy = self._make_policy()
        self.router = Router(
            RouterConfig(
                experts=list(experts),
                policy=self.policy,
                tiers=cfg.tier_set,
                max_steps=cfg.max_steps,
                default_tier=cfg.tiers[0].name,
            )
        )
        self.reward_fn = reward_fn or reward_from_config(cfg.reward_config)
        self.rng = random.Random(cfg.seed * 7919 + self.info.rank)
        world = self.info.world_size
        if cfg.episodes_per_iter % world or cfg.minibatch_size % world:
            raise ConfigError(
                f"episodes_per_iter and minibatch_size must be multiples of the "
                f"number of processes ({world})"
            )

    def _make_policy(self) -> HFPolicy:
        """The rollout policy: in process, or over the vLLM server (checked here, so that a
        dead server or another model's tokenizer fails before any training)."""
        cfg = self.config
        kwargs: dict[str, Any] = dict(
            name="ppo",
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            seed=cfg.seed + 1000 * self.info.rank,
        )
        self._synced_iteration: int | None = None
        self._last_sync_s = 0.0
        if cfg.rollout != "vllm":
            return HFPolicy(self.plain_lm, self.tokenizer, **kwargs)
        assert cfg.vllm_url is not None  # RLConfig checks it
        policy = VLLMPolicy(
            self.plain_lm,
            self.tokenizer,
            base_url=cfg.vllm_url,
            served_model=cfg.vllm_model,
            timeout_s=cfg.vllm_timeout_s,
            sync_dir=cfg.vllm_sync_dir or Path(cfg.output_dir) / "vllm_weights",
            **kwargs,
        )
        policy.check()
        return policy

    # ------------------------------------------------------------------ one iteration
    def rollout(self) -> list[Episode]:
        """This rank's share of the iteration's episodes, run through the graph. With
        rollout="vllm" the server first gets the weights of this iteration (once)."""
        if self.info.fsdp:  # the rollout copy gets the current weights
            full = unwrapped_state_dict(self.model, rank0_only=False)
            self.plain_lm.load_state_dict(
                {k[3:]: v for k, v in full.items() if k.startswith("lm.")}
            )
        self._last_sync_s = 0.0
        if isinstance(self.policy, VLLMPolicy) and self._synced_iteration != self.iteration:
            if self.info.is_main:  # one server, one sync
                self._last_sync_s = self.policy.sync_weights()
            if torch.distributed.is_initialized():
                torch.distributed.barrier()
            self._synced_iteration = self.iteration
        n = self.config.episodes_per_iter // self.info.world_size
        picks = [self.rng.choice(self.queries) for _ in range(n)]
        episodes = asyncio.run(
            collect(self.router, picks, self.config.tier_set, self.reward_fn, self.rng)
        )
        if isinstance(self.policy, VLLMPolicy):
            self.policy.raise_failure()  # a server error must stop training, not be learnt
        return episodes

    def step(self) -> dict[str, float]:
        """Rollout + update; returns the iteration's metrics (reduced over ranks)."""
        t0 = time.perf_counter()
        episodes = self.rollout()
        t1 = time.perf_counter()
        tiers = self.config.tier_set
        scores = shaped_scores(episodes, tiers, self.multipliers, margin=self.config.target_margin)
        batch = build_batch(
            episodes, pad_id=self._pad_id(), max_len=self.config.max_seq_len, scores=scores
        )
        metrics = self.update(batch)
        t2 = time.perf_counter()
        metrics.update(episode_metrics(episodes, list(tiers), self.config.controller_expert))
        metrics.update(
            constraint_metrics(
                metrics, tiers, self.multipliers, scores, margin=self.config.target_margin
            )
        )
        for k, v in self.cache_counters.delta().items():  # summed over ranks
            metrics[k] = float(all_reduce_sum(torch.tensor(v, dtype=torch.float64)))
        rollout_s = t1 - t0 - self._last_sync_s
        written = sum(
            len(s.token_ids)
            for e in episodes
            for s in e.trajectory.segments
            if s.kind == "controller"
        )
        metrics.update(
            {
                "time/rollout_s": rollout_s,
                "time/sync_s": self._last_sync_s,
                "time/update_s": t2 - t1,
                "rollout/truncated": float(batch.truncated),
                "perf/rollout_tokens_per_s": written / max(rollout_s, 1e-9),
            }
        )
        self.iteration += 1
        return metrics

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    # ------------------------------------------------------------------ PPO update
    @torch.no_grad()
    def prepare(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """Old log-probs and values, reference KL, token rewards, advantages and returns."""
        cfg, dev = self.config, self.info.device
        mask = batch.action_mask.to(dev)  # (B, T)
        old_logp, old_values, ref_logp = [], [], []
        chunk = max(cfg.minibatch_size // self.info.world_size, 1)
        for s in range(0, len(batch), chunk):
            ids, attn = (
                batch.input_ids[s : s + chunk].to(dev),
                batch.attention_mask[s : s + chunk].to(dev),
            )
            logits, values = self.model(ids, attn)  # (b, L, V), (b, L)
            old_logp.append(logprobs_from_logits(logits[:, :-1], ids[:, 1:]))
            old_values.append(values[:, :-1])
            if self.ref_lm is not None:
                ref_logits = self.ref_lm(input_ids=ids, attention_mask=attn).logits
                ref_logp.append(logprobs_from_logits(ref_logits[:, :-1], ids[:, 1:]))
        out = {"old_logp": torch.cat(old_logp), "old_values": torch.cat(old_values)}  # (B, T)
        kl = (
            kl_penalty(out["old_logp"], torch.cat(ref_logp), cfg.kl_estimator) if ref_logp else None
        )
        rewards = token_rewards(batch.scores.to(dev), mask, kl, cfg.kl_coef)  # (B, T)
        adv, out["returns"] = compute_gae(
            rewards, out["old_values"], mask, gamma=cfg.gamma, lam=cfg.lam
        )
        if cfg.whiten_advantages and cfg.whiten_by_tier:  # per tier, over the global batch
            names = [t.name for t in cfg.tiers]
            group = torch.tensor([names.index(t) for t in batch.tiers], device=dev)
            adv = masked_whiten_by_group(adv, mask, group, len(names), reduce=all_reduce_sum)
        elif cfg.whiten_advantages:  # statistics of the global batch, so N ranks match one
            n = all_reduce_sum(mask.sum())
            mean = all_reduce_sum((adv * mask).sum()) / n.clamp_min(1)
            var = all_reduce_sum((((adv - mean) * mask) ** 2).sum()) / n.clamp_min(1)
            adv = masked_whiten(adv, mask, mean=mean, var=var)
        out["advantages"] = adv
        out["kl_ref"] = masked_mean(kl, mask) if kl is not None else torch.zeros(())
        return out

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """``ppo_epochs`` passes over this rank's rows of the batch in minibatches."""
        prep = self.prepare(batch)
        local_mb = self.config.minibatch_size // self.info.world_size
        stats: dict[str, list[float]] = defaultdict(list)
        tokens = 0
        t0 = time.perf_counter()
        for _ in range(self.config.ppo_epochs):
            order = torch.randperm(len(batch), generator=self._shuffle)
            for s in range(0, len(batch), local_mb):
                idx = order[s : s + local_mb]
                for k, v in self._minibatch(batch, prep, idx).items():
                    stats[k].append(v)
                tokens += int(batch.attention_mask[idx].sum())
        elapsed = time.perf_counter() - t0
        metrics = {k: _mean_over_ranks(sum(v) / len(v)) for k, v in stats.items()}
        metrics["losses/kl_ref"] = _mean_over_ranks(float(prep["kl_ref"]))
        total_tokens = float(all_reduce_sum(torch.tensor(float(tokens))))
        metrics["perf/update_tokens_per_s"] = total_tokens / max(elapsed, 1e-9)
        return metrics

    def _minibatch(
        self, batch: RolloutBatch, prep: dict[str, torch.Tensor], idx: torch.Tensor
    ) -> dict[str, float]:
        cfg, dev = self.config, self.info.device
        ids, attn = batch.input_ids[idx].to(dev), batch.attention_mask[idx].to(dev)
        mask = batch.action_mask[idx].to(dev)  # (b, T)
        logits, values = self.model(ids, attn)  # (b, L, V), (b, L)
        logp = logprobs_from_logits(logits[:, :-1], ids[:, 1:])  # (b, T)
        n_tok = float(all_reduce_sum(mask.sum()))  # masked tokens of the global minibatch
        pl, pstats = policy_loss(
            logp,
            prep["old_logp"][idx],
            prep["advantages"][idx],
            mask,
            clip=cfg.clip,
            num_tokens=n_tok,
        )
        vl, vstats = value_loss(
            values[:, :-1],
            prep["old_values"][idx],
            prep["returns"][idx],
            mask,
            clip=cfg.value_clip,
            num_tokens=n_tok,
        )
        entropy = masked_mean(entropy_from_logits(logits[:, :-1]), mask, n_tok)
        loss = pl + cfg.vf_coef * vl - cfg.ent_coef * entropy
        # FSDP averages gradients over ranks; scaling by N turns that average into the sum
        # that a single process computing sum / n_tok would get.
        (loss * self.info.world_size).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        return {
            "losses/policy": float(pl.detach()) * self.info.world_size,
            "losses/value": float(vl.detach()) * self.info.world_size,
            "losses/entropy": float(entropy.detach()) * self.info.world_size,
            "losses/approx_kl": float(pstats["approx_kl"]),
            "losses/clipfrac": float(pstats["clipfrac"]),
            "losses/value_clipfrac": float(vstats["clipfrac"]),
            "losses/grad_norm": float(grad_norm),
        }

    # ------------------------------------------------------------------ loop and checkpoints
    def train(self) -> list[dict[str, float]]:
        """Run the remaining iterations, logging each and saving as configured."""
        cfg = self.config
        out = Path(cfg.output_dir)
        writer = MetricsWriter(
            cfg.metrics_file or out / "metrics.jsonl",
            tensorboard_dir=out / "tensorboard" if cfg.tensorboard else None,
            progress_total=cfg.iterations - self.iteration if cfg.progress else None,
            enabled=self.info.is_main,
        )
        history = []
        try:
            while self.iteration < cfg.iterations:
                metrics = self.step()
                writer.write(self.iteration, metrics)
                history.append(metrics)
                if cfg.save_every and self.iteration % cfg.save_every == 0:
                    self.save(out / f"checkpoint-{self.iteration}")
            self.save(out / "final")
        finally:
            writer.close()
            if self._traces is not None:
                self._traces.close()
        return history

    def save(self, path: str | Path) -> Path:
        """A checkpoint transformers loads directly, plus value head and optimizer state."""
        state: dict[str, Any] = {"iteration": self.iteration, "config": self.config.to_dict()}
        if self.multipliers is not None:
            state["lagrange"] = self.multipliers.state_dict()
        return save_checkpoint(
            path, self.model, self.plain_lm, self.tokenizer, self.optimizer, self.info, state
        )


def _mean_over_ranks(value: float) -> float:
    t = all_reduce_sum(torch.tensor(float(value)))
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return float(t) / world
