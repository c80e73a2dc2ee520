"""Run records for training and reports: segments with token ids and a loss mask."""

from corl_graph.trajectories._record import Segment, SegmentKind, Trajectory, TrajectoryBuilder

__all__ = ["Segment", "SegmentKind", "Trajectory", "TrajectoryBuilder"]
