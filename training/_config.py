"""Training configs: one per algorithm on a shared base, each validated once at construction,
with errors that name the field to change and how::

    TrainConfig          the controller, the output, the task (table or traces), tiers, reward
    ├── RLConfig         rollouts and their schedule, clip, KL, spend targets, FSDP, saving
    │   ├── PPOConfig    the value model and GAE (corl-graph train --algo ppo)
    │   └── GRPOConfig   groups of num_generations runs, TRL's own options (--algo grpo)
    └── SFTConfig        the warm start on prepared traces (--algo sft)

``config_class(algo)`` gives the class of an algorithm, ``config_from_dict`` builds one from
JSON-ready fields (what ``to_dict`` writes beside every checkpoint, or a ``--config`` file).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier, TierSet, default_tiers
from corl_graph.experts import CacheMatch, OnMiss

from ._ppo_losses import KLEstimator
from ._rewards import RewardConfig, RewardKind
from ._verifiers import VerifierKind

__all__ = [
    "Algo",
    "CostConstraint",
    "GRPOConfig",
    "MixedPrecision",
    "PPOConfig",
    "RLConfig",
    "RolloutBackend",
    "SFTConfig",
    "TrainConfig",
    "config_class",
    "config_from_dict",
]

# grpo: TRL GRPOTrainer over graph rollouts (training/_grpo.py); sft: the warm start on
# prepared traces (training/_traces.py), whose output --algo ppo|grpo continues from.
Algo = Literal["ppo", "grpo", "sft"]
MixedPrecision = Literal["no", "bf16", "fp16"]
# "none": the reward alone (caps are the ledger's); "lagrange": maximise it subject to
# E[cost | tier] <= tier.target_usd, one multiplier per tier (training/_lagrange.py).
CostConstraint = Literal["none", "lagrange"]
# where the controller's turns are sampled: "local" (HFPolicy, in process) or "vllm"
# (VLLMPolicy: a vLLM server at vllm_url, the trainer's weights reloaded into it after each
# update; training/_vllm_rollout.py)
RolloutBackend = Literal["local", "vllm"]

_C = TypeVar("_C", bound="TrainConfig")


def _default_tiers() -> tuple[BudgetTier, ...]:
    return tuple(default_tiers().values())


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ConfigError(f"{name} must be {options}, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """What every trainer needs: the controller (``model``), where to write (``output_dir``),
    the task, the tiers, the reward and the logging. Not trained on by itself: use
    ``PPOConfig``, ``GRPOConfig`` or ``SFTConfig``.

    The task is an outcome table (``table`` + ``experts``, replayed) or a folder of prepared
    traces (``traces``: cached experts, the query set and its labels; ``experts`` then
    optionally picks some of the cached ones). ``on_miss`` says what a sub-query missing
    from the cache becomes: a failed call ("unavailable") or a live call charged to tenant
    "training" on ``ledger_url`` within ``training_budget_usd`` ("live").
    ``minibatch_size`` sequences make one optimizer step (global, over all ranks).

    >>> SFTConfig(model="ckpt", output_dir="out", traces="prepared/").on_miss
    'unavailable'
    """

    kind: ClassVar[Algo]  # the algorithm of this class; the field ``algo`` must say the same

    model: str
    output_dir: str
    table: str | None = None
    experts: tuple[str, ...] = ()
    tiers: tuple[BudgetTier, ...] = field(default_factory=_default_tiers)
    algo: Algo = "ppo"  # each subclass's own (kept so that saved and --config files load)
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
    # optimisation
    minibatch_size: int = 16
    learning_rate: float = 1e-5
    seed: int = 0
    # the controller's turns
    max_new_tokens: int = 48
    max_seq_len: int = 2048
    # reward
    reward: RewardKind = "corl"
    reward_alpha: float = 0.3
    format_penalty: float = 0.1
    verifier: VerifierKind = "exact"
    # output
    metrics_file: str | None = None
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if type(self) in (TrainConfig, RLConfig):
            raise ConfigError(
                f"{type(self).__name__} is a shared base: use PPOConfig, GRPOConfig or SFTConfig"
            )
        self._check()

    def _check(self) -> None:
        """Every rule of the fields; subclasses extend it (and call it first)."""
        name = type(self).__name__
        if self.algo != self.kind:
            _choice("algo", self.algo, ("ppo", "grpo", "sft"))
            raise ConfigError(
                f"{name} is the config of algo={self.kind!r}; for algo={self.algo!r} use "
                f"{config_class(self.algo).__name__}(...) with its own fields (e.g. "
                "GRPOConfig.num_generations, SFTConfig.sft_epochs)"
            )
        self._check_task()
        if not self.tiers:
            raise ConfigError(f"{name}.tiers is empty: give at least one BudgetTier")
        TierSet(self.tiers)  # raises ConfigError on duplicate names
        for key in ("minibatch_size", "max_new_tokens", "max_seq_len"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{name}.{key} must be >= 1, got {getattr(self, key)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"{name}.learning_rate must be > 0, got {self.learning_rate}")
        self.reward_config  # noqa: B018  (RewardConfig validates the reward fields)

    def _check_task(self) -> None:
        if (self.table is None) == (self.traces is None):
            raise ConfigError(
                "give exactly one task: exactly one of table= (--table, an outcome table, "
                "with experts=) and traces= (--traces, a folder written by corl-graph traces "
                "prepare)"
            )
        if self.table is not None and not self.experts:
            raise ConfigError(
                f"{type(self).__name__}.experts is empty: name at least one model of the "
                "table (--table needs --experts A,B)"
            )
        _choice("on_miss", self.on_miss, ("unavailable", "live"))
        _choice("cache_match", self.cache_match, ("query", "subquery"))
        if self.traces is None and (
            self.on_miss != "unavailable"
            or self.cache_match != "query"
            or self.live_experts is not None
            or self.training_budget_usd is not None
        ):
            raise ConfigError(
                "on_miss, cache_match, live_experts and training_budget_usd apply to cached "
                "experts: set traces= (they apply to --traces only)"
            )
        if self.on_miss == "live":
            if self.training_budget_usd is None or not self.training_budget_usd >= 0:
                raise ConfigError(
                    "on_miss='live' needs training_budget_usd >= 0 (--training-budget-usd: the "
                    "most live calls may spend, enforced by the ledger under tenant 'training')"
                )
        elif self.training_budget_usd is not None or self.ledger_url != "memory://":
            raise ConfigError(
                "training_budget_usd and ledger_url (--training-budget-usd, --ledger) apply "
                "to --on-miss live only: set on_miss='live' or leave them out"
            )

    @property
    def reward_config(self) -> RewardConfig:
        """The reward fields as the shared ``RewardConfig`` (``reward_from_config`` takes it)."""
        return RewardConfig(self.reward, self.reward_alpha, self.format_penalty, self.verifier)

    @property
    def tier_set(self) -> TierSet:
        return TierSet(self.tiers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``algo`` (saved beside every checkpoint; ``config_from_dict``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
        """The config of ``data``'s fields (``to_dict``'s, or a ``--config`` file's); a field
        of another algorithm's config is an error that names the config it belongs to."""
        d = dict(data)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            owners = {
                k: [c.__name__ for c in _CONFIGS.values() if k in c.field_names()] for k in unknown
            }
            hints = "; ".join(
                f"{k} is a field of {' and '.join(o)}" if o else f"{k} is no config's field"
                for k, o in owners.items()
            )
            raise ConfigError(f"{cls.__name__} has no field {', '.join(unknown)} ({hints})")
        if "tiers" in d:
            d["tiers"] = tuple(
                t if isinstance(t, BudgetTier) else BudgetTier(**t) for t in d["tiers"]
            )
        if "experts" in d:
            d["experts"] = tuple(d["experts"])
        if "trl_options" in d:
            d["trl_options"] = dict(d["trl_options"])
        return cls(**d)

    @classmethod
    def field_names(cls) -> frozenset[str]:
        """The names of this config's fields."""
        return frozenset(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class RLConfig(TrainConfig):
    """The fields PPO and GRPO share: rollouts through the graph and their schedule.

    Batch sizes are global (over all ranks): each iteration rolls out ``episodes_per_iter``
    graph runs, then makes ``ppo_epochs`` passes over them in minibatches of
    ``minibatch_size`` sequences. ``clip`` and ``kl_coef`` are PPO's clip range and KL
    coefficient (GRPO's epsilon and beta). ``cost_constraint="lagrange"`` maximises the
    reward subject to each tier's spend target (PPO-Lagrangian: the shaped reward is
    reward - lambda_tier * cost / target_tier, lambda by dual ascent after every iteration).

    >>> PPOConfig(model="m", output_dir="o", table="t", experts=("a",)).episodes_per_iter
    32
    """

    # schedule
    iterations: int = 100
    episodes_per_iter: int = 32
    ppo_epochs: int = 2
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    clip: float = 0.2
    kl_coef: float = 0.02
    # rollouts
    max_steps: int = 4
    temperature: float = 1.0
    rollout: RolloutBackend = "local"
    vllm_url: str | None = None  # the server's root or /v1 URL (rollout="vllm")
    vllm_model: str | None = None  # its served model name (default: the first it lists)
    vllm_timeout_s: float = 300.0
    vllm_sync_dir: str | None = None  # the server reads it; default OUTPUT_DIR/vllm_weights
    # spend targets as constraints (PPO-Lagrangian)
    cost_constraint: CostConstraint = "none"
    lagrange_lr: float = 0.05
    lagrange_init: float = 0.0
    lagrange_max: float = 10.0
    # train against target * (1 - target_margin): a tightened target, so sampling noise
    # around the mean spend does not push the evaluated spend over the real target
    target_margin: float = 0.0
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

    def _check(self) -> None:
        super()._check()
        name = type(self).__name__
        for key in ("iterations", "episodes_per_iter", "ppo_epochs", "max_steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{name}.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("temperature", "clip", "max_grad_norm"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{name}.{key} must be > 0, got {getattr(self, key)}")
        for key in ("kl_coef", "weight_decay"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{name}.{key} must be >= 0, got {getattr(self, key)}")
        if self.save_every < 0:
            raise ConfigError("save_every must be >= 0 (0 = only at the end)")
        if self.episodes_per_iter % self.minibatch_size:
            raise ConfigError(
                f"episodes_per_iter ({self.episodes_per_iter}) must be a multiple of "
                f"minibatch_size ({self.minibatch_size}); e.g. set minibatch_size to "
                f"{math.gcd(self.episodes_per_iter, self.minibatch_size)}"
            )
        _choice("mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        if self.cpu_offload and self.fsdp is False:
            raise ConfigError("cpu_offload needs FSDP: set fsdp=True (or leave it None)")
        if self.mixed_precision != "no" and self.fsdp is False:
            raise ConfigError("mixed_precision needs FSDP: set fsdp=True (or leave it None)")
        self._check_constraint()
        self._check_rollout()

    def _check_rollout(self) -> None:
        _choice("rollout", self.rollout, ("local", "vllm"))
        if self.rollout == "vllm":
            if not self.vllm_url:
                raise ConfigError(
                    "rollout='vllm' needs vllm_url (--vllm-url http://HOST:PORT/v1), a vLLM "
                    "server on the controller's model folder started with VLLM_SERVER_DEV_MODE=1"
                )
            if not self.vllm_timeout_s > 0:
                raise ConfigError(f"vllm_timeout_s must be > 0, got {self.vllm_timeout_s}")
        elif self.vllm_url or self.vllm_model or self.vllm_sync_dir:
            raise ConfigError(
                "vllm_url, vllm_model and vllm_sync_dir apply to rollout='vllm' only "
                "(--rollout vllm)"
            )

    def _check_constraint(self) -> None:
        _choice("cost_constraint", self.cost_constraint, ("none", "lagrange"))
        for key in ("lagrange_lr", "lagrange_max"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"{type(self).__name__}.{key} must be a finite number > 0, got {value}"
                )
        if not (math.isfinite(self.target_margin) and 0 <= self.target_margin < 1):
            raise ConfigError(f"target_margin must be in [0, 1), got {self.target_margin}")
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


@dataclass(frozen=True)
class PPOConfig(RLConfig):
    """PPO with a value model and GAE (``PPOTrainer``): the shared fields plus the critic's.

    ``algo`` is always "ppo"; GRPO and the warm start have their own configs,
    ``GRPOConfig`` and ``SFTConfig``.

    >>> PPOConfig(model="ckpt", output_dir="out", table="t.jsonl.gz", experts=("a",)).algo
    'ppo'
    """

    kind: ClassVar[Algo] = "ppo"
    value_learning_rate: float | None = None
    gamma: float = 1.0
    lam: float = 0.95
    value_clip: float | None = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    kl_estimator: KLEstimator = "k1"
    whiten_advantages: bool = True
    # whiten within each tier's episodes instead of over the whole batch (a tier whose
    # Lagrangian penalties are large then does not drown the other tiers' signal)
    whiten_by_tier: bool = False

    def _check(self) -> None:
        super()._check()
        for key, lo, hi in (("gamma", 0, 1), ("lam", 0, 1)):
            if not lo <= getattr(self, key) <= hi:
                raise ConfigError(f"{key} must be in [{lo}, {hi}], got {getattr(self, key)}")
        for key in ("ent_coef", "vf_coef"):
            if getattr(self, key) < 0:
                raise ConfigError(f"PPOConfig.{key} must be >= 0, got {getattr(self, key)}")
        _choice("kl_estimator", self.kl_estimator, ("k1", "k2", "k3"))


# TRL GRPOConfig arguments that make_grpo_trainer sets from GRPOConfig's fields: the field
# to set instead of passing them in trl_options.
GRPO_DERIVED_OPTIONS: Mapping[str, str] = {
    "output_dir": "output_dir",
    "per_device_train_batch_size": "minibatch_size",
    "gradient_accumulation_steps": "episodes_per_iter",
    "num_generations": "num_generations",
    "steps_per_generation": "episodes_per_iter",
    "num_iterations": "ppo_epochs",
    "max_steps": "iterations",
    "learning_rate": "learning_rate",
    "beta": "kl_coef",
    "epsilon": "clip",
    "temperature": "temperature",
    "max_completion_length": "max_seq_len",
    "max_grad_norm": "max_grad_norm",
    "weight_decay": "weight_decay",
    "seed": "seed",
    "report_to": "tensorboard",
    "save_strategy": "save_every",
    "save_steps": "save_every",
    "bf16": "mixed_precision",
    "fp16": "mixed_precision",
    "activation_checkpointing": "gradient_checkpointing",
    "disable_tqdm": "progress",
    "fsdp": "fsdp",
    "fsdp_config": "cpu_offload",
}


@dataclass(frozen=True)
class GRPOConfig(RLConfig):
    """GRPO through TRL (``make_grpo_trainer``, ``train_grpo``): ``num_generations`` runs of
    each (query, tier) form a group whose mean reward is the baseline (no value model).
    ``trl_options`` are further arguments of TRL's ``GRPOConfig`` (e.g. ``logging_steps``);
    those this config sets from its own fields are refused with the field to set instead.

    >>> GRPOConfig(model="m", output_dir="o", table="t", experts=("a",)).num_generations
    4
    """

    kind: ClassVar[Algo] = "grpo"
    algo: Algo = "grpo"
    num_generations: int = 4
    trl_options: dict[str, Any] = field(default_factory=dict, hash=False)

    def _check(self) -> None:
        super()._check()
        if self.num_generations < 2:
            raise ConfigError(
                f"GRPOConfig.num_generations must be >= 2 (the group's mean is the baseline), "
                f"got {self.num_generations}"
            )
        if self.episodes_per_iter % self.num_generations or (
            self.minibatch_size % self.num_generations
        ):
            raise ConfigError(
                f"episodes_per_iter ({self.episodes_per_iter}) and minibatch_size "
                f"({self.minibatch_size}) must be multiples of num_generations "
                f"({self.num_generations}) so that every GRPO group is complete in a step"
            )
        if self.rollout == "vllm":
            raise ConfigError(
                "rollout='vllm' is PPO's (PPOConfig, --algo ppo) for now; GRPO samples in "
                "process through TRL"
            )
        derived = sorted(set(self.trl_options) & set(GRPO_DERIVED_OPTIONS))
        if derived:
            fixes = ", ".join(f"{k} -> GRPOConfig.{GRPO_DERIVED_OPTIONS[k]}" for k in derived)
            raise ConfigError(f"trl_options sets what GRPOConfig's fields set: {fixes}")


@dataclass(frozen=True)
class SFTConfig(TrainConfig):
    """The warm start on prepared traces (``train_sft``): ``sft_epochs`` passes over the best
    recorded run per (query, tier) whose reward reaches ``sft_min_reward``, plus the
    boundary runs (``sft_boundary``: always-cheapest / always-strongest), in batches of
    ``minibatch_size``. Its ``OUTPUT_DIR/final`` is the next PPO or GRPO run's ``model``.

    >>> SFTConfig(model="ckpt", output_dir="out", traces="prepared/").sft_epochs
    1.0
    """

    kind: ClassVar[Algo] = "sft"
    algo: Algo = "sft"
    sft_epochs: float = 1.0
    sft_min_reward: float = 1.0
    sft_boundary: bool = True

    def _check(self) -> None:
        if self.traces is None:
            raise ConfigError(
                "algo='sft' (SFTConfig, the warm start) trains on prepared traces: set "
                "traces= (--traces), not table="
            )
        super()._check()
        if not self.sft_epochs > 0:
            raise ConfigError(f"sft_epochs must be > 0, got {self.sft_epochs}")


_CONFIGS: dict[str, type[TrainConfig]] = {"ppo": PPOConfig, "grpo": GRPOConfig, "sft": SFTConfig}


def config_class(algo: str) -> type[TrainConfig]:
    """The config class of ``algo``.

    >>> config_class("grpo").__name__
    'GRPOConfig'
    """
    try:
        return _CONFIGS[algo]
    except KeyError:
        raise ConfigError(f"algo must be 'ppo', 'grpo' or 'sft', got {algo!r}") from None


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """The config of ``data["algo"]`` (default "ppo") built from the other fields."""
    return config_class(str(data.get("algo", "ppo"))).from_dict(data)
