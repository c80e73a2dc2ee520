"""The neural policy and query embeddings that ship with corl_graph (numbers only).

``gsm8k_policy.npz`` / ``.json``: weights trained by ``corl_graph.training.neural_ppo`` on the
bundled GSM8K replay table's train split (demo pool and tiers of ``corl_graph.data``);
``gsm8k_embeddings.npz``: float16 all-MiniLM-L6-v2 embeddings of its queries, keyed by id.
Loading needs numpy only.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from corl_graph.evaluation._embed import load_embeddings
from corl_graph.policies import NeuralPolicy

__all__ = ["load_bundled_embeddings", "load_bundled_policy"]


def load_bundled_policy(**kwargs: object) -> NeuralPolicy:
    """The shipped GSM8K routing policy (``NeuralPolicy.load`` keyword arguments apply)."""
    files = resources.files("corl_graph.data")
    with resources.as_file(files / "gsm8k_policy.npz") as path:
        return NeuralPolicy.load(path, **kwargs)


def load_bundled_embeddings() -> dict[str, np.ndarray]:
    """Query id -> embedding (float32, 384) for every query of the bundled GSM8K table."""
    files = resources.files("corl_graph.data")
    with resources.as_file(files / "gsm8k_embeddings.npz") as path:
        return load_embeddings(path)
