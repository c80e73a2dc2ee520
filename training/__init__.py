"""Training (imported as ``corl_graph.training``): graph trajectories to PPO updates of the
controller, with expert tokens masked out of the loss, in one process or under FSDP2.

>>> from corl_graph.training import PPOConfig, corl_reward
>>> corl_reward(1.0, cost_usd=0.001, budget_usd=0.002)
1.0
"""

from ._checkpoint import load_training_state, save_checkpoint
from ._config import (
    Algo,
    CostConstraint,
    GRPOConfig,
    MixedPrecision,
    PPOConfig,
    RLConfig,
    RolloutBackend,
    SFTConfig,
    TrainConfig,
    config_class,
    config_from_dict,
)
from ._fsdp import DistInfo, init_distributed
from ._grpo import GraphRollout, make_grpo_trainer, split_for_grpo, train_grpo
from ._hf_policy import HFPolicy
from ._lagrange import (
    TierMultipliers,
    dual_ascent,
    lagrangian_reward,
    target_penalty,
)
from ._metrics import require_tensorboard
from ._model import ActorCritic
from ._ppo_losses import (
    KLEstimator,
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
from ._rewards import (
    RewardBreakdown,
    RewardConfig,
    RewardFn,
    RewardKind,
    corl_reward,
    cost_weighted_reward,
    format_penalty,
    graded_reward,
    make_reward,
    reward_from_config,
)
from ._rollout import (
    Episode,
    QuerySpec,
    RolloutBatch,
    build_batch,
    collect,
    load_queries,
)
from ._teacher import ExpertStats, TierTeacher, teacher_script, tier_teacher
from ._tier_metrics import episode_metrics
from ._tiny import CHATML_TEMPLATE, PROTOCOL_TOKENS, tiny_llama, tiny_tokenizer
from ._traces import (
    TRAINING_TENANT,
    CacheCounters,
    TracesTask,
    traces_task,
    train_sft,
    training_task,
)
from ._trainer import PPOTrainer
from ._verifiers import (
    Verifier,
    VerifierKind,
    exact_match,
    make_verifier,
    math_match,
)
from ._vllm_rollout import (
    SyncMode,
    VLLMPolicy,
    VLLMResponseError,
    VLLMRolloutError,
    VLLMSyncError,
    VLLMTimeoutError,
    VLLMTokenizerMismatchError,
    VLLMUnreachableError,
)
from ._warmstart import (
    ScriptedPolicy,
    WarmStartExample,
    boundary_script,
    recorded_script,
    select_best,
    sft_trainer,
    sft_warm_start,
    warm_start_examples,
)

__all__ = [
    "CHATML_TEMPLATE",
    "PROTOCOL_TOKENS",
    "TRAINING_TENANT",
    "ActorCritic",
    "Algo",
    "CacheCounters",
    "CostConstraint",
    "DistInfo",
    "Episode",
    "ExpertStats",
    "GRPOConfig",
    "GraphRollout",
    "HFPolicy",
    "KLEstimator",
    "MixedPrecision",
    "PPOConfig",
    "PPOTrainer",
    "QuerySpec",
    "RLConfig",
    "RewardBreakdown",
    "RewardConfig",
    "RewardFn",
    "RewardKind",
    "RolloutBackend",
    "RolloutBatch",
    "SFTConfig",
    "ScriptedPolicy",
    "SyncMode",
    "TierMultipliers",
    "TierTeacher",
    "TracesTask",
    "TrainConfig",
    "VLLMPolicy",
    "VLLMResponseError",
    "VLLMRolloutError",
    "VLLMSyncError",
    "VLLMTimeoutError",
    "VLLMTokenizerMismatchError",
    "VLLMUnreachableError",
    "Verifier",
    "VerifierKind",
    "WarmStartExample",
    "boundary_script",
    "build_batch",
    "collect",
    "compute_gae",
    "config_class",
    "config_from_dict",
    "corl_reward",
    "cost_weighted_reward",
    "dual_ascent",
    "entropy_from_logits",
    "episode_metrics",
    "exact_match",
    "format_penalty",
    "graded_reward",
    "init_distributed",
    "kl_penalty",
    "lagrangian_reward",
    "load_queries",
    "load_training_state",
    "logprobs_from_logits",
    "make_grpo_trainer",
    "make_reward",
    "make_verifier",
    "masked_mean",
    "masked_whiten",
    "masked_whiten_by_group",
    "math_match",
    "policy_loss",
    "recorded_script",
    "require_tensorboard",
    "reward_from_config",
    "save_checkpoint",
    "select_best",
    "sft_trainer",
    "sft_warm_start",
    "split_for_grpo",
    "target_penalty",
    "teacher_script",
    "tier_teacher",
    "tiny_llama",
    "tiny_tokenizer",
    "token_rewards",
    "traces_task",
    "train_grpo",
    "train_sft",
    "training_task",
    "value_loss",
    "warm_start_examples",
]
