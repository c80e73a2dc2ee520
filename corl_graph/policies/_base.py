"""The Policy protocol: given what the controller can see, choose the next action."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from corl_graph.budget import BudgetTier
from corl_graph.protocol import Action, ExpertCall, ExpertDescriptor, StepRecord
from corl_graph.trajectories import Segment

__all__ = ["Decision", "Policy", "PolicyView", "Turn"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of the controller transcript: what it wrote, or an observation it was given."""

    role: Literal["controller", "observation"]
    text: str


@dataclass(frozen=True, slots=True)
class PolicyView:
    """Everything a policy may look at when it decides; built fresh for every step.

    ``remaining_usd`` is what this query may still spend under its tier's cap; ``features``
    holds a query embedding when the caller supplied one (the neural policy needs it).
    """

    query: str
    query_id: str
    tier: BudgetTier
    tier_names: tuple[str, ...]
    experts: tuple[ExpertDescriptor, ...]
    transcript: tuple[Turn, ...]
    steps: tuple[StepRecord, ...]
    calls: tuple[ExpertCall, ...]
    spent_usd: float
    remaining_usd: float
    step: int
    max_steps: int
    budget_exhausted: bool
    features: tuple[float, ...] | None = None

    @property
    def answers(self) -> list[str]:
        """Extracted answers of the successful calls so far, in call order."""
        return [c.answer for c in self.calls if c.status == "ok" and c.answer is not None]

    def expert(self, name: str) -> ExpertDescriptor:
        for e in self.experts:
            if e.name == name:
                return e
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's output. ``action`` None means the output was unusable (``format_error`` says
    why) and the graph takes its safe fallback. ``segments`` carry token ids and log-probs for
    training (prompt delta with mask 0, generated tokens with mask 1)."""

    action: Action | None
    raw: str | None = None
    format_error: str | None = None
    segments: Sequence[Segment] = ()


@runtime_checkable
class Policy(Protocol):
    """Anything with a ``name`` and an async ``decide``.

    >>> from corl_graph.policies import ControllerOnly
    >>> isinstance(ControllerOnly("small"), Policy)
    True
    """

    name: str

    async def decide(self, view: PolicyView) -> Decision:
        """Choose the next action. Raising ``PolicyError`` means no decision could be made."""
        ...
