"""What the chat model, the subgraph node and the HTTP server share: turning a chat into a
query, and a routed result into usage, metadata or a typed error."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from corl_graph._exceptions import BudgetExceededError, ExpertError, PolicyError, RunError
from corl_graph.graph import RouteResult

__all__ = ["chunk_text", "render_query", "result_metadata", "unanswered_error"]

_ROLE_LABEL = {
    "system": "System",
    "developer": "System",
    "user": "User",
    "human": "User",
    "assistant": "Assistant",
    "ai": "Assistant",
    "tool": "Tool",
}

# Words with their trailing space: joined back they give the answer exactly.
_PIECE = re.compile(r"\s*\S+\s*|\s+")


def render_query(turns: Sequence[tuple[str, str]]) -> str:
    """The router's query for a chat of (role, text) turns.

    A single turn is the query as it is; a longer chat is written out with role labels so
    that the experts see the system prompt and the history too.

    >>> render_query([("user", "What is 2 + 2?")])
    'What is 2 + 2?'
    >>> print(render_query([("system", "Be terse."), ("user", "2 + 2?")]))
    System: Be terse.
    <BLANKLINE>
    User: 2 + 2?
    """
    kept = [(role, text) for role, text in turns if text.strip()]
    if len(kept) == 1:
        return kept[0][1]
    return "\n\n".join(f"{_ROLE_LABEL.get(role, role.title())}: {text}" for role, text in kept)


def chunk_text(text: str) -> Iterator[str]:
    """The answer in word-sized pieces for streaming; ``"".join`` gives ``text`` back.

    >>> list(chunk_text("It is 4."))
    ['It ', 'is ', '4.']
    """
    yield from (m.group(0) for m in _PIECE.finditer(text))


def result_metadata(result: RouteResult) -> dict[str, Any]:
    """Dollars and routing facts of a run, for ``response_metadata`` and HTTP extensions."""
    return {
        "cost_usd": result.cost_usd,
        "tier": result.tier,
        "tenant": result.tenant,
        "query_id": result.query_id,
        "expert_calls": result.expert_calls,
        "stop_reason": result.stop_reason,
        "budget_exhausted": result.budget_exhausted,
        "answer_source": result.answer_source,
        "trace_id": result.trace_id,
        "calls": [
            {
                "expert": c.expert,
                "status": c.status,
                "input_tokens": c.input_tokens,
                "output_tokens": c.output_tokens,
                "cost_usd": c.cost_usd,
            }
            for c in result.calls
        ],
    }


def unanswered_error(result: RouteResult) -> RunError | None:
    """Why a run produced no answer, as a typed error; None when it did answer.

    A refused reservation wins over a failed expert: more money, not a retry, is the fix.
    """
    if result.answer or result.tool_calls:
        return None
    denied = [c for c in result.calls if c.status == "denied"]
    if result.budget_exhausted or denied:
        # The ledger's message names the cap it hit; the tenant cap is the one a caller
        # cannot fix by choosing another tier.
        reason = denied[-1].error if denied and denied[-1].error else "budget exhausted"
        scope = "tenant" if "tenant" in reason.lower() else "query"
        return BudgetExceededError(
            f"no answer within the budget of tier {result.tier!r}: {reason}",
            scope=scope,
            requested_usd=sum(c.reserved_usd for c in result.calls),
            remaining_usd=0.0,
        )
    failed = [c for c in result.calls if c.status in ("failed", "timeout")]
    if failed:
        last = failed[-1]
        return ExpertError(
            f"expert {last.expert} failed: {last.error or last.status}",
            expert=last.expert,
            attempts=last.attempts,
        )
    if result.stop_reason == "policy_error":
        detail = result.format_errors[-1] if result.format_errors else "no decision"
        return PolicyError(f"the controller failed: {detail}")
    return None
