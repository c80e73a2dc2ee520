"""The graph's state: what a run has done so far. Dependencies live in RouterConfig."""

from __future__ import annotations

import operator
from typing import Annotated, Required, TypedDict

from corl_graph.experts import ChatRequest, ToolCall
from corl_graph.policies import Turn
from corl_graph.protocol import Action, ExpertCall, StepRecord, StopReason
from corl_graph.trajectories import Segment

__all__ = ["RouterInput", "RouterState"]


class RouterInput(TypedDict, total=False):
    """What a caller passes in. ``features`` is a query embedding for neural policies;
    ``chat`` the caller's chat, tools and response format, sent with every expert call."""

    query: Required[str]
    query_id: str
    features: list[float] | None
    chat: ChatRequest | None


class RouterState(RouterInput, total=False):
    """The run so far. Lists grow through ``operator.add`` reducers, so nodes return deltas."""

    run_id: str
    deadline: float | None  # time.time() instant set by the first step (query_timeout_s)
    transcript: Annotated[list[Turn], operator.add]
    steps: Annotated[list[StepRecord], operator.add]
    calls: Annotated[list[ExpertCall], operator.add]
    segments: Annotated[list[Segment], operator.add]
    format_errors: Annotated[list[str], operator.add]
    pending: Action | None
    budget_exhausted: bool
    answer: str | None
    answer_source: str | None
    tool_calls: list[ToolCall]  # the answer's tool calls, when the caller gave tools
    stop_reason: StopReason | None
