"""kNN and threshold routers on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from corl_graph._exceptions import ConfigError
from corl_graph.policies import KNNRouter, ThresholdRouter

INDEX = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], dtype=np.float32)
# The cheap model is right near (1, 0), only the strong one near (0, 1).
CORRECT = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])


def test_knn_routes_by_neighbours_and_cost() -> None:
    r = KNNRouter(INDEX, CORRECT, ["cheap", "strong"], [1.0, 10.0], k=2, cost_weight=0.5)
    assert r.choose(np.array([[1.0, 0.0], [0.0, 1.0]])).tolist() == [0, 1]
    # Without the cost term, ties go to the first expert; with a huge one, always cheap.
    assert r.with_cost_weight(100.0).choose(np.array([[0.0, 1.0]])).tolist() == [0]
    allowed = np.array([[True, False]])
    assert r.choose(np.array([[0.0, 1.0]]), allowed).tolist() == [0]
    # Leave-one-out: a query is not its own neighbour.
    assert r.neighbour_accuracy(INDEX, exclude_self=True).shape == (4, 2)
    with pytest.raises(ConfigError):
        KNNRouter(INDEX, CORRECT[:, :1], ["cheap", "strong"], [1.0, 10.0])


def test_threshold_calibrates_the_share_of_strong_calls() -> None:
    gain = CORRECT[:, 1] - CORRECT[:, 0]
    r = ThresholdRouter(INDEX, gain, "cheap", "strong", k=1)
    train = r.scores(INDEX, exclude_self=True)
    for share in (0.0, 0.5, 1.0):
        c = r.calibrate(share)
        assert (train > c.threshold).mean() == share
    assert "share=0.50" in r.calibrate(0.5).name
    with pytest.raises(ConfigError):
        r.calibrate(1.5)
