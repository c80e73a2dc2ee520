"""The controller's protocol: actions, shared records, prompt rendering and action parsing."""

from corl_graph.protocol._actions import (
    Action,
    ActionKind,
    Aggregate,
    Answer,
    CallExpert,
    Think,
)
from corl_graph.protocol._records import (
    CallStatus,
    ExpertCall,
    ExpertDescriptor,
    StepRecord,
    StopReason,
)
from corl_graph.protocol._tags import (
    ParsedAction,
    budget_token,
    escape_text,
    is_valid_name,
    parse_action,
    render_action,
    render_budget_exhausted,
    render_expert_error,
    render_expert_reply,
    render_system_prompt,
    render_user_prompt,
    unescape_text,
)

__all__ = [
    "Action",
    "ActionKind",
    "Aggregate",
    "Answer",
    "CallExpert",
    "CallStatus",
    "ExpertCall",
    "ExpertDescriptor",
    "ParsedAction",
    "StepRecord",
    "StopReason",
    "Think",
    "budget_token",
    "escape_text",
    "is_valid_name",
    "parse_action",
    "render_action",
    "render_budget_exhausted",
    "render_expert_error",
    "render_expert_reply",
    "render_system_prompt",
    "render_user_prompt",
    "unescape_text",
]
