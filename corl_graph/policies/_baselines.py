"""Fixed policies: the yardsticks every learned policy is compared with."""

from __future__ import annotations

import random
from collections.abc import Sequence

from corl_graph._exceptions import ConfigError
from corl_graph.policies._base import Decision, PolicyView
from corl_graph.protocol import Aggregate, Answer, CallExpert

__all__ = ["AlwaysExpert", "Cascade", "ControllerOnly", "RandomRouter"]


def _finish(view: PolicyView) -> Decision:
    """Answer with what the calls gave: the vote when there is an answer, else the last text."""
    if view.answers:
        return Decision(Aggregate())
    texts = [c.text for c in view.calls if c.status == "ok" and c.text]
    return Decision(Answer(texts[-1] if texts else ""))


class ControllerOnly:
    """The controller answers alone. In replay it *is* a small model, called once as an expert
    so that its recorded answer and cost are used.

    >>> ControllerOnly("gemma-2b").name
    'controller-only(gemma-2b)'
    """

    def __init__(self, model: str):
        self.model = model
        self.name = f"controller-only({model})"

    async def decide(self, view: PolicyView) -> Decision:
        if not view.calls and not view.budget_exhausted:
            return Decision(CallExpert(self.model, view.query))
        return _finish(view)


class AlwaysExpert:
    """Call the same ``k`` experts on every query (the query itself as sub-query), then vote.

    >>> AlwaysExpert(["a", "b", "c"]).name
    'always(a+b+c)'
    """

    def __init__(self, experts: Sequence[str]):
        if not experts:
            raise ConfigError("AlwaysExpert needs at least one expert name")
        self.experts = list(experts)
        self.name = f"always({'+'.join(self.experts)})"

    async def decide(self, view: PolicyView) -> Decision:
        called = {c.expert for c in view.calls}
        for name in self.experts:
            if name not in called and not view.budget_exhausted:
                return Decision(CallExpert(name, view.query))
        return _finish(view)


class Cascade:
    """Try experts cheapest first; stop once ``agree`` of them give the same answer, or after
    the last. A fixed cascade in the FrugalGPT style, with agreement as the confidence signal.

    >>> Cascade(["small", "mid", "big"], agree=2).name
    'cascade(small>mid>big,agree=2)'
    """

    def __init__(self, experts: Sequence[str], *, agree: int = 2, name: str | None = None):
        if not experts:
            raise ConfigError("Cascade needs at least one expert name")
        if agree < 1:
            raise ConfigError(f"Cascade agree must be >= 1, got {agree}")
        self.experts = list(experts)
        self.agree = agree
        self.name = name or f"cascade({'>'.join(self.experts)},agree={agree})"

    async def decide(self, view: PolicyView) -> Decision:
        answers = view.answers
        if answers and max(answers.count(a) for a in answers) >= self.agree:
            return Decision(Aggregate())
        called = {c.expert for c in view.calls}
        remaining = [e for e in self.experts if e not in called]
        if remaining and not view.budget_exhausted:
            return Decision(CallExpert(remaining[0], view.query))
        return _finish(view)


class RandomRouter:
    """Call one expert drawn at random with fixed probabilities (seeded), then answer.

    Used at matched cost: choose ``weights`` so its mean cost equals the policy it is
    compared with.
    """

    def __init__(self, experts: Sequence[str], weights: Sequence[float], *, seed: int = 0):
        if len(experts) != len(weights) or not experts:
            raise ConfigError("RandomRouter needs one weight per expert, and at least one")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError("RandomRouter weights must be >= 0 with a positive sum")
        self.experts = list(experts)
        self.weights = list(weights)
        self._rng = random.Random(seed)
        self.name = "random"

    async def decide(self, view: PolicyView) -> Decision:
        if not view.calls and not view.budget_exhausted:
            choice = self._rng.choices(self.experts, self.weights)[0]
            return Decision(CallExpert(choice, view.query))
        return _finish(view)
