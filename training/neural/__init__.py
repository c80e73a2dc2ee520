"""Pieces of the neural router's trainer (``corl_graph.training.neural_ppo``): the simulated
environment and network (``_env``), fixed teacher policies run in the simulator
(``_teachers``) and behaviour cloning from them (``_bc``)."""

from ._bc import BCConfig, bc_loss, clone_teachers, demonstrations
from ._env import Env, Net, build_env, build_meta, pca, split_ids
from ._teachers import (
    TeacherBank,
    assign_teachers,
    teacher_act,
    teacher_bank,
    teacher_rewards,
)

__all__ = [
    "BCConfig",
    "Env",
    "Net",
    "TeacherBank",
    "assign_teachers",
    "bc_loss",
    "build_env",
    "build_meta",
    "clone_teachers",
    "demonstrations",
    "pca",
    "split_ids",
    "teacher_act",
    "teacher_bank",
    "teacher_rewards",
]
