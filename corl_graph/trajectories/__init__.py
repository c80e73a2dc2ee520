"""Run records for training and reports: segments with token ids and a loss mask, and stores."""

from corl_graph.trajectories._prepare import (
    CoverageReport,
    Label,
    PreparedTraces,
    fit_prices,
    load_labels,
    load_prepared,
    prepare_traces,
)
from corl_graph.trajectories._record import Segment, SegmentKind, Trajectory, TrajectoryBuilder
from corl_graph.trajectories._store import (
    SCHEMA_VERSION,
    JsonlTrajectoryStore,
    SQLiteTrajectoryStore,
    TrajectoryStore,
    open_store,
)

__all__ = [
    "SCHEMA_VERSION",
    "CoverageReport",
    "JsonlTrajectoryStore",
    "Label",
    "PreparedTraces",
    "SQLiteTrajectoryStore",
    "Segment",
    "SegmentKind",
    "Trajectory",
    "TrajectoryBuilder",
    "TrajectoryStore",
    "fit_prices",
    "load_labels",
    "load_prepared",
    "open_store",
    "prepare_traces",
]
