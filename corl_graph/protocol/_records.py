"""Plain records shared by the graph, the policies and the trajectory store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CallStatus", "ExpertCall", "ExpertDescriptor", "StepRecord", "StopReason"]

CallStatus = Literal["ok", "failed", "timeout", "denied", "truncated"]
StopReason = Literal[
    "answered", "aggregated", "step_limit", "budget_exhausted", "policy_error", "deadline"
]


@dataclass(frozen=True, slots=True)
class ExpertDescriptor:
    """What the controller is told about an expert: its name, price and strengths.

    >>> ExpertDescriptor("gpt-4o-mini", 0.15, 0.6, "cheap, good at arithmetic").name
    'gpt-4o-mini'
    """

    name: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    description: str = ""
    max_output_tokens: int = 1024


@dataclass(frozen=True, slots=True)
class ExpertCall:
    """One expert call as the graph saw it, including refused and failed ones.

    ``answer`` is the extracted final answer used for voting (None when none was found).
    ``cost_usd`` is what the ledger was charged (0 for denied calls). ``tool_calls`` are the
    reply's tool calls (``{"name", "args", "id"}``) when the caller gave tools.
    """

    expert: str
    subquery: str
    status: CallStatus
    text: str = ""
    answer: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    estimated: bool = False
    reserved_usd: float = 0.0
    attempts: int = 0
    latency_s: float = 0.0
    error: str | None = None
    reservation_id: str | None = None
    tool_calls: Sequence[Mapping[str, Any]] = ()

    def __post_init__(self) -> None:
        # Checkpoint serialisers and JSON give lists back; one type keeps records equal.
        if not isinstance(self.tool_calls, tuple):
            object.__setattr__(self, "tool_calls", tuple(self.tool_calls))


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One controller decision: the action taken and, when the output was malformed, why."""

    index: int
    action: Literal["think", "call", "aggregate", "answer"]
    detail: str = ""
    raw: str | None = None
    format_error: str | None = None
    fallback: bool = False
