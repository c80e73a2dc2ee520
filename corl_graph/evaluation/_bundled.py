"""The routers and query embeddings that ship with corl_graph (numbers only).

``gsm8k_router/``: the learned cascade router (``CascadeRouter``) that ``corl-graph demo``
runs, fitted by ``corl-graph fit`` on the bundled GSM8K replay table's train split with the
demo's pool (the table's five models), controller, caps and 512-token reply cap
(``corl_graph.data``), the medium tier's mean-spend target from the tier derivation rule
(docs/evaluation.md)::

    corl-graph fit corl_graph/data/gsm8k_replay.jsonl.gz \\
        --embeddings corl_graph/data/gsm8k_embeddings.npz --controller gemma-2-2b-it \\
        --tiers low=0.0008,medium=0.006:0.00059,high=0.02 --max-output-tokens 512 \\
        --out corl_graph/data/gsm8k_router

It holds the train queries' embeddings and correctness labels (its kNN index), the MLP and
matrix-factorisation predictors and the stop scorers: derived numbers, no text.
``gsm8k_policy.npz`` / ``.json``: the older ``NeuralPolicy`` trained by
``corl_graph.training.neural_ppo`` on the same split (kept for ``NeuralPolicy`` users).
``gsm8k_embeddings.npz``: float16 all-MiniLM-L6-v2 embeddings of the table's queries, keyed by
id. Loading needs numpy only.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from corl_graph.evaluation._embed import load_embeddings
from corl_graph.policies import CascadeRouter, NeuralPolicy

__all__ = ["load_bundled_embeddings", "load_bundled_policy", "load_bundled_router"]


def load_bundled_router(**kwargs: object) -> CascadeRouter:
    """The shipped GSM8K cascade router (``CascadeRouter.load`` keyword arguments apply)."""
    files = resources.files("corl_graph.data")
    with resources.as_file(files / "gsm8k_router") as path:
        return CascadeRouter.load(path, **kwargs)


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
