"""A child process's workload for the concurrency test (imports only the store)."""

from __future__ import annotations

from corl_graph.protocol import ExpertCall
from corl_graph.trajectories import Segment, Trajectory, open_store


def append_many(url: str, worker: int, n: int = 25) -> None:
    store = open_store(url)
    for i in range(n):
        t = Trajectory(
            query="q",
            tier="low",
            tenant="acme",
            query_id=f"id{worker * 100 + i}",
            segments=[Segment("controller", "c", (3,), (-0.5,))],
            calls=[ExpertCall("e", "sub", "ok")],
        )
        t.metadata["pad"] = "x" * 20000  # longer than a pipe buffer: must still not interleave
        store.append_sync(t)
