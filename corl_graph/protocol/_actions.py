"""The controller's actions: think, call an expert, aggregate by vote, answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Action", "ActionKind", "Aggregate", "Answer", "CallExpert", "Think"]

ActionKind = Literal["think", "call", "aggregate", "answer"]


@dataclass(frozen=True, slots=True)
class Think:
    """Reason privately; costs no expert money.

    >>> Think("the sum is small").kind
    'think'
    """

    text: str
    kind: Literal["think"] = "think"


@dataclass(frozen=True, slots=True)
class CallExpert:
    """Send ``subquery`` to the expert called ``expert``.

    >>> CallExpert("gpt-4o", "What is 17 * 23?").kind
    'call'
    """

    expert: str
    subquery: str
    kind: Literal["call"] = "call"


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Answer with the majority vote of the experts' extracted answers so far.

    >>> Aggregate().kind
    'aggregate'
    """

    kind: Literal["aggregate"] = "aggregate"


@dataclass(frozen=True, slots=True)
class Answer:
    """Give the final answer.

    >>> Answer("391").text
    '391'
    """

    text: str
    kind: Literal["answer"] = "answer"


Action = Think | CallExpert | Aggregate | Answer
