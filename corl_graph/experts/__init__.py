"""Experts: LangChain chat models or recorded outcomes, each with a price sheet and limits."""

from corl_graph.experts._answers import AnswerExtractor, extract_answer, normalize_answer
from corl_graph.experts._cached import (
    CachedExpert,
    CachedReply,
    CacheMatch,
    OnMiss,
    ReplayCache,
    normalize_subquery,
)
from corl_graph.experts._chat import ChatModelExpert
from corl_graph.experts._expert import (
    Expert,
    ExpertReply,
    ExpertRequest,
    PriceSheet,
    estimate_tokens,
    input_token_bound,
)
from corl_graph.experts._replay import ReplayExpert, replay_experts
from corl_graph.experts._table import Outcome, OutcomeTable, QueryInfo
from corl_graph.experts._tools import (
    ChatRequest,
    ToolCall,
    ballot_of,
    normalize_tool_calls,
    parse_json_reply,
    tool_choice_name,
)

__all__ = [
    "AnswerExtractor",
    "CacheMatch",
    "CachedExpert",
    "CachedReply",
    "ChatModelExpert",
    "ChatRequest",
    "Expert",
    "ExpertReply",
    "ExpertRequest",
    "OnMiss",
    "Outcome",
    "OutcomeTable",
    "PriceSheet",
    "QueryInfo",
    "ReplayCache",
    "ReplayExpert",
    "ToolCall",
    "ballot_of",
    "estimate_tokens",
    "extract_answer",
    "input_token_bound",
    "normalize_answer",
    "normalize_subquery",
    "normalize_tool_calls",
    "parse_json_reply",
    "replay_experts",
    "tool_choice_name",
]
