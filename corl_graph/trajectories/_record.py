"""The run record that training consumes: segments with token ids and a loss mask.

A trajectory is the controller's whole context in order. The loss mask is fixed when a
segment is appended, from who wrote it, never inferred from token values afterwards::

    kind        system  prompt  budget  controller  expert  observation  controller
    tokens      s s s   p p p   b       c c c c     e e e   o o          c c
    loss_mask   0 0 0   0 0 0   0       1 1 1 1     0 0 0   0 0          1 1

Policies that do not produce tokens (baselines, the neural policy) leave ``token_ids`` empty;
the record still carries the actions, calls, cost and answer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from corl_graph.protocol import ExpertCall, StepRecord

__all__ = ["Segment", "SegmentKind", "Trajectory", "TrajectoryBuilder"]

SegmentKind = Literal[
    "system", "prompt", "budget", "controller", "expert", "observation", "padding"
]


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of tokens written by one party. Only ``controller`` segments are trained on.

    ``logprobs`` are the sampling policy's log-probabilities of ``token_ids`` (controller only).

    >>> Segment("controller", "<answer>4</answer>", (7, 8), (-0.1, -0.2)).loss_mask
    (1, 1)
    """

    kind: SegmentKind
    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.logprobs and len(self.logprobs) != len(self.token_ids):
            raise ValueError(
                f"{len(self.logprobs)} logprobs for {len(self.token_ids)} tokens in a "
                f"{self.kind} segment; give one per token or none"
            )

    @property
    def trainable(self) -> bool:
        return self.kind == "controller"

    @property
    def loss_mask(self) -> tuple[int, ...]:
        return (1 if self.trainable else 0,) * len(self.token_ids)


@dataclass(slots=True)
class Trajectory:
    """One routed query, as recorded for training, evaluation and cost reports."""

    query: str
    tier: str
    tenant: str
    query_id: str
    policy: str = ""
    trajectory_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)
    segments: list[Segment] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    calls: list[ExpertCall] = field(default_factory=list)
    answer: str | None = None
    answer_source: str | None = None
    stop_reason: str | None = None
    cost_usd: float = 0.0
    format_errors: list[str] = field(default_factory=list)
    trace_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def token_ids(self) -> list[int]:
        return [t for s in self.segments for t in s.token_ids]

    @property
    def loss_mask(self) -> list[int]:
        return [m for s in self.segments for m in s.loss_mask]

    @property
    def expert_calls(self) -> int:
        """Calls that reached an expert (denied ones did not)."""
        return sum(1 for c in self.calls if c.status != "denied")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trajectory:
        d = dict(data)
        d["segments"] = [
            Segment(
                s["kind"], s["text"], tuple(s.get("token_ids", ())), tuple(s.get("logprobs", ()))
            )
            for s in d.get("segments", ())
        ]
        d["steps"] = [StepRecord(**s) for s in d.get("steps", ())]
        d["calls"] = [ExpertCall(**c) for c in d.get("calls", ())]
        return cls(**d)


class TrajectoryBuilder:
    """Appends segments and keeps token ids and loss mask in step, as tokens arrive.

    >>> b = TrajectoryBuilder()
    >>> b.append(Segment("prompt", "q", (1, 2)))
    >>> b.append(Segment("controller", "a", (3,), (-0.5,)))
    >>> b.token_ids, b.loss_mask, b.logprobs
    ([1, 2, 3], [0, 0, 1], [0.0, 0.0, -0.5])
    """

    def __init__(self, segments: Iterable[Segment] = ()):
        self.segments: list[Segment] = []
        self.token_ids: list[int] = []
        self.loss_mask: list[int] = []
        self.logprobs: list[float] = []
        for s in segments:
            self.append(s)

    def append(self, segment: Segment) -> None:
        self.segments.append(segment)
        self.token_ids.extend(segment.token_ids)
        self.loss_mask.extend(segment.loss_mask)
        self.logprobs.extend(segment.logprobs or (0.0,) * len(segment.token_ids))
