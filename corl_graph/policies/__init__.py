"""Policies: the controller's decision rule, behind one ``Policy`` protocol."""

from corl_graph.policies._base import Decision, Policy, PolicyView, Turn
from corl_graph.policies._baselines import AlwaysExpert, Cascade, ControllerOnly, RandomRouter
from corl_graph.policies._llm import LLMPolicy

__all__ = [
    "AlwaysExpert",
    "Cascade",
    "ControllerOnly",
    "Decision",
    "LLMPolicy",
    "Policy",
    "PolicyView",
    "RandomRouter",
    "Turn",
]
