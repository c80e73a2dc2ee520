"""Run records for training and reports: segments with token ids and a loss mask, and stores."""

from corl_graph.trajectories._prepare import (
    CoverageReport,
    Label,
    PreparedTraces,
    load_labels,
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
    "load_labels",
    "open_store",
    "prepare_traces",
]
