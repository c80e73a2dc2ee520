"""Policies: the controller's decision rule, behind one ``Policy`` protocol."""

from corl_graph.policies._base import Decision, Policy, PolicyView, Turn
from corl_graph.policies._baselines import AlwaysExpert, Cascade, ControllerOnly, RandomRouter
from corl_graph.policies._cascade import (
    CascadeRouter,
    OperatingPoint,
    RouterSpec,
    knn_estimate,
    stop_features,
    stop_scores,
)
from corl_graph.policies._knn import KNNRouter, Reserve, affordable, last_reply
from corl_graph.policies._llm import LLMPolicy
from corl_graph.policies._neural import (
    FEATURE_VERSION,
    LOG_W_RANGE,
    NeuralMeta,
    NeuralPolicy,
    StepBatch,
    action_mask,
    plurality,
    project,
    step_features,
)
from corl_graph.policies._score import (
    KNNPredictor,
    MFPredictor,
    MLPPredictor,
    Predictor,
    ScoreRouter,
)
from corl_graph.policies._threshold import ThresholdRouter

__all__ = [
    "FEATURE_VERSION",
    "LOG_W_RANGE",
    "AlwaysExpert",
    "Cascade",
    "CascadeRouter",
    "ControllerOnly",
    "Decision",
    "KNNPredictor",
    "KNNRouter",
    "LLMPolicy",
    "MFPredictor",
    "MLPPredictor",
    "NeuralMeta",
    "NeuralPolicy",
    "OperatingPoint",
    "Policy",
    "PolicyView",
    "Predictor",
    "RandomRouter",
    "Reserve",
    "RouterSpec",
    "ScoreRouter",
    "StepBatch",
    "ThresholdRouter",
    "Turn",
    "action_mask",
    "affordable",
    "knn_estimate",
    "last_reply",
    "plurality",
    "project",
    "step_features",
    "stop_features",
    "stop_scores",
]
