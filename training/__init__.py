"""Training (imported as ``corl_graph.training``): graph trajectories to PPO updates of the
controller, with expert tokens masked out of the loss, in one process or under FSDP2.

>>> from corl_graph.training import PPOConfig, corl_reward
>>> corl_reward(1.0, cost_usd=0.001, budget_usd=0.002)
1.0
"""

from corl_graph.training._checkpoint import load_training_state, save_checkpoint
from corl_graph.training._config import Algo, CostConstraint, MixedPrecision, PPOConfig
from corl_graph.training._fsdp import DistInfo, init_distributed
from corl_graph.training._grpo import GraphRollout, make_grpo_trainer, split_for_grpo, train_grpo
from corl_graph.training._hf_policy import HFPolicy
from corl_graph.training._lagrange import (
    TierMultipliers,
    dual_ascent,
    lagrangian_reward,
    target_penalty,
)
from corl_graph.training._model import ActorCritic
from corl_graph.training._ppo_losses import (
    KLEstimator,
    compute_gae,
    entropy_from_logits,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from corl_graph.training._rewards import (
    RewardBreakdown,
    RewardConfig,
    RewardFn,
    RewardKind,
    corl_reward,
    format_penalty,
    graded_reward,
    make_reward,
    reward_from_config,
)
from corl_graph.training._rollout import (
    Episode,
    QuerySpec,
    RolloutBatch,
    build_batch,
    collect,
    load_queries,
)
from corl_graph.training._tier_metrics import episode_metrics
from corl_graph.training._tiny import CHATML_TEMPLATE, PROTOCOL_TOKENS, tiny_llama, tiny_tokenizer
from corl_graph.training._traces import (
    TRAINING_TENANT,
    CacheCounters,
    TracesTask,
    traces_task,
    train_sft,
)
from corl_graph.training._trainer import PPOTrainer
from corl_graph.training._verifiers import (
    Verifier,
    VerifierKind,
    exact_match,
    make_verifier,
    math_match,
)
from corl_graph.training._warmstart import (
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
    "GraphRollout",
    "HFPolicy",
    "KLEstimator",
    "MixedPrecision",
    "PPOConfig",
    "PPOTrainer",
    "QuerySpec",
    "RewardBreakdown",
    "RewardConfig",
    "RewardFn",
    "RewardKind",
    "RolloutBatch",
    "ScriptedPolicy",
    "TierMultipliers",
    "TracesTask",
    "Verifier",
    "VerifierKind",
    "WarmStartExample",
    "boundary_script",
    "build_batch",
    "collect",
    "compute_gae",
    "corl_reward",
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
    "math_match",
    "policy_loss",
    "recorded_script",
    "reward_from_config",
    "save_checkpoint",
    "select_best",
    "sft_trainer",
    "sft_warm_start",
    "split_for_grpo",
    "target_penalty",
    "tiny_llama",
    "tiny_tokenizer",
    "token_rewards",
    "traces_task",
    "train_grpo",
    "train_sft",
    "value_loss",
    "warm_start_examples",
]
