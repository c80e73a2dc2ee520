"""PPOConfig: the one typed configuration of the PPO trainer, validated at construction."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier, TierSet, default_tiers
from corl_graph.experts import CacheMatch, OnMiss

from ._ppo_losses import KLEstimator
from ._rewards import RewardConfig, RewardKind
from ._verifiers import VerifierKind

__all__ = ["Algo", "CostConstraint", "MixedPrecision", "PPOConfig"]

# grpo: TRL GRPOTrainer over graph rollouts (training/_grpo.py); sft: the warm start on
# prepared traces (training/_traces.py), whose output --algo ppo|grpo continues from.
Algo = Literal["ppo", "grpo", "sft"]
MixedPrecision = Literal["no", "bf16", "fp16"]
# "none": the reward alone (caps are the ledger's); "lagrange": maximise it subject to
# E[cost | tier] <= tier.target_usd, one multiplier per tier (training/_lagrange.py).
CostConstraint = Literal["none", "lagrange"]


def _default_tiers() -> tuple[BudgetTier, ...]:
    return tuple(default_tiers().values())


@dataclass(frozen=True)
class PPOConfig:
    """Everything one PPO run needs. Errors raised here say which field to change and how.

    Batch sizes are global (over all ranks): each iteration rolls out ``episodes_per_iter``
    graph runs, then makes ``ppo_epochs`` passes over them in minibatches of
    ``minibatch_size`` sequences.

    The task is an outcome table (``table`` + ``experts``, replayed) or a folder of prepared
    traces (``traces``: cached experts, the query set and its labels; ``experts`` then
    optionally picks some of the cached ones). ``on_miss`` says what a sub-query missing
    from the cache becomes: a failed call ("unavailable") or a live call charged to tenant
    "training" on ``ledger_url`` within ``training_budget_usd`` ("live").
    ``algo="sft"`` is the warm start on the traces: ``sft_epochs`` passes over the best
    recorded run per (query, tier) whose reward reaches ``sft_min_reward``, plus the
    boundary runs (``sft_boundary``), in batches of ``minibatch_size``.

    >>> PPOConfig(model="ckpt", output_dir="out", table="t.jsonl.gz", experts=("a",)).algo
    'ppo'
    >>> PPOConfig(model="ckpt", output_dir="out", traces="prepared/", algo="sft").on_miss
    'unavailable'
    """

    model: str
    output_dir: str
    table: str | None = None
    experts: tuple[str, ...] = ()
    tiers: tuple[BudgetTier, ...] = field(default_factory=_default_tiers)
    algo: Algo = "ppo"
    split: Literal["train", "test"] = "train"
    max_queries: int | None = None
    query_field: Literal["prompt", "question"] = "prompt"
    # training on prepared traces instead of a table
    traces: str | None = None
    on_miss: OnMiss = "unavailable"
    cache_match: CacheMatch = "query"  # "subquery": only the same wording replays
    live_experts: str | None = None  # server config with the real experts (read by the CLI)
    training_budget_usd: float | None = None
    ledger_url: str = "memory://"
    # warm start (algo="sft")
    sft_epochs: float = 1.0
    sft_min_reward: float = 1.0
    sft_boundary: bool = True
    # schedule
    iterations: int = 100
    episodes_per_iter: int = 32
    minibatch_size: int = 16
    ppo_epochs: int = 2
    learning_rate: float = 1e-5
    value_learning_rate: float | None = None
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    # PPO
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    value_clip: float | None = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    kl_coef: float = 0.02
    kl_estimator: KLEstimator = "k1"
    whiten_advantages: bool = True
    # rollouts
    max_steps: int = 4
    max_new_tokens: int = 48
    temperature: float = 1.0
    max_seq_len: int = 2048
    # reward
    reward: RewardKind = "corl"
    reward_alpha: float = 0.3
    format_penalty: float = 0.1
    verifier: VerifierKind = "exact"
    # spend targets as constraints (PPO-Lagrangian): the shaped reward is
    # reward - lambda_tier * cost / target_tier, lambda by dual ascent after every iteration
    cost_constraint: CostConstraint = "none"
    lagrange_lr: float = 0.05
    lagrange_init: float = 0.0
    lagrange_max: float = 10.0
    # the expert that is the controller's own model: calls to it are not expert calls in
    # expert_call_ratio (as in corl-graph eval --controller)
    controller_expert: str | None = None
    # distributed and memory
    fsdp: bool | None = None
    mixed_precision: MixedPrecision = "no"
    cpu_offload: bool = False
    gradient_checkpointing: bool = False
    # output
    save_every: int = 0
    resume_from: str | None = None
    metrics_file: str | None = None
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self._check_positive()
        self._check_task()
        if not self.tiers:
            raise ConfigError("PPOConfig.tiers is empty: give at least one BudgetTier")
        TierSet(self.tiers)  # raises ConfigError on duplicate names
        if self.algo not in ("ppo", "grpo", "sft"):
            raise ConfigError(f"algo must be 'ppo', 'grpo' or 'sft', got {self.algo!r}")
        if self.episodes_per_iter % self.minibatch_size:
            raise ConfigError(
                f"episodes_per_iter ({self.episodes_per_iter}) must be a multiple of "
                f"minibatch_size ({self.minibatch_size}); e.g. set minibatch_size to "
                f"{math.gcd(self.episodes_per_iter, self.minibatch_size)}"
            )
        for name, lo, hi in (("gamma", 0, 1), ("lam", 0, 1), ("reward_alpha", 0, 1)):
            if not lo <= getattr(self, name) <= hi:
                raise ConfigError(f"{name} must be in [{lo}, {hi}], got {getattr(self, name)}")
        if self.cpu_offload and self.fsdp is False:
            raise ConfigError("cpu_offload needs FSDP: set fsdp=True (or leave it None)")
        if self.mixed_precision != "no" and self.fsdp is False:
            raise ConfigError("mixed_precision needs FSDP: set fsdp=True (or leave it None)")
        self._check_constraint()
        self.reward_config  # noqa: B018  (RewardConfig validates the reward fields)
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ConfigError(f"kl_estimator must be 'k1', 'k2' or 'k3', got {self.kl_estimator!r}")

    def _check_task(self) -> None:
        if (self.table is None) == (self.traces is None):
            raise ConfigError(
                "give exactly one task: table= (an outcome table, with experts=) or traces= "
                "(a folder written by corl-graph traces prepare)"
            )
        if self.table is not None and not self.experts:
            raise ConfigError("PPOConfig.experts is empty: name at least one model of the table")
        if self.algo == "sft" and self.traces is None:
            raise ConfigError("algo='sft' (warm start) trains on prepared traces: set traces=")
        if self.on_miss not in ("unavailable", "live"):
            raise ConfigError(f"on_miss must be 'unavailable' or 'live', got {self.on_miss!r}")
        if self.cache_match not in ("query", "subquery"):
            raise ConfigError(
                f"cache_match must be 'query' or 'subquery', got {self.cache_match!r}"
            )
        if self.on_miss == "live":
            if self.traces is None:
                raise ConfigError("on_miss='live' applies to cached experts: set traces=")
            if self.training_budget_usd is None or self.training_budget_usd < 0:
                raise ConfigError(
                    "on_miss='live' needs training_budget_usd >= 0 (the most live calls may "
                    "spend, enforced by the ledger under tenant 'training')"
                )
        if not self.sft_epochs > 0:
            raise ConfigError(f"sft_epochs must be > 0, got {self.sft_epochs}")

    def _check_constraint(self) -> None:
        if self.cost_constraint not in ("none", "lagrange"):
            raise ConfigError(
                f"cost_constraint must be 'none' or 'lagrange', got {self.cost_constraint!r}"
            )
        for name in ("lagrange_lr", "lagrange_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"PPOConfig.{name} must be a finite number > 0, got {value}")
        if not 0 <= self.lagrange_init <= self.lagrange_max:
            raise ConfigError(
                f"lagrange_init must be in [0, lagrange_max={self.lagrange_max}], "
                f"got {self.lagrange_init}"
            )
        if self.cost_constraint == "lagrange":
            missing = [t.name for t in self.tiers if t.target_usd_per_query is None]
            if missing:
                raise ConfigError(
                    f"cost_constraint='lagrange' needs a spend target on every tier; "
                    f"{', '.join(missing)} has none: set BudgetTier.target_usd_per_query "
                    "(corl-graph train --tiers NAME=CAP:TARGET,...)"
                )

    def _check_positive(self) -> None:
        for name in (
            "iterations",
            "episodes_per_iter",
            "minibatch_size",
            "ppo_epochs",
            "max_steps",
            "max_new_tokens",
            "max_seq_len",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "temperature", "clip", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"PPOConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("kl_coef", "ent_coef", "vf_coef", "format_penalty", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"PPOConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.save_every < 0:
            raise ConfigError("save_every must be >= 0 (0 = only at the end)")

    @property
    def reward_config(self) -> RewardConfig:
        """The reward fields as the shared ``RewardConfig`` (``reward_from_config`` takes it)."""
        return RewardConfig(self.reward, self.reward_alpha, self.format_penalty, self.verifier)

    @property
    def tier_set(self) -> TierSet:
        return TierSet(self.tiers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (saved beside every checkpoint)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PPOConfig:
        d = dict(data)
        d["tiers"] = tuple(BudgetTier(**t) for t in d.get("tiers", ()))
        d["experts"] = tuple(d.get("experts", ()))
        return cls(**d)
