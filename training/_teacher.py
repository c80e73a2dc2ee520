"""Tier-aware warm-start teachers: per tier, the experts a demonstration calls, chosen on
training data so that the tier's mean spend meets its target.

A controller told only its tier (not which queries are hard) meets a mean-spend target by
mixing: call expert ``b`` with probability ``p``, else expert ``a``. Choosing the shares that
maximise accuracy subject to ``E[cost] <= target`` is a linear program with one constraint,
so its optimum is one expert (the best one within the target) or a mix of two on the upper
concave hull of (mean cost, accuracy)::

    accuracy ^                  b
             |         mix .--*
             |       .--'  |       target inside [c_a, c_b]:
             |  a *-'      |       p = (target - c_a) / (c_b - c_a)
             |             target  accuracy = acc_a + p * (acc_b - acc_a)
             +-------------------> mean cost per call

The constraint's dual price in units of the target, ``(acc_b - acc_a) / ((c_b - c_a) /
target)``, is the Lagrange multiplier at which that mixture is a stationary point of
PPO-Lagrangian's shaped reward ``correct - lambda * cost / target``: the value a run that
starts from the teacher's warm start can start its multiplier at.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from corl_graph._exceptions import ConfigError
from corl_graph.policies import PolicyView
from corl_graph.protocol import escape_text

__all__ = ["ExpertStats", "TierTeacher", "teacher_script", "tier_teacher"]


@dataclass(frozen=True, slots=True)
class ExpertStats:
    """An expert's mean cost per call and accuracy on training queries.

    >>> ExpertStats(mean_cost_usd=6e-5, accuracy=0.83).accuracy
    0.83
    """

    mean_cost_usd: float
    accuracy: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean_cost_usd) and self.mean_cost_usd >= 0):
            raise ConfigError(f"mean_cost_usd must be finite and >= 0, got {self.mean_cost_usd}")
        if not 0 <= self.accuracy <= 1:
            raise ConfigError(f"accuracy must be in [0, 1], got {self.accuracy}")


@dataclass(frozen=True, slots=True)
class TierTeacher:
    """Which expert a tier's demonstrations call (``shares``: expert -> probability), with
    the mixture's expected cost and accuracy on the data it was chosen on, and the dual price
    of the spend constraint there (``multiplier``, 0 when the constraint is slack).

    >>> t = TierTeacher({"cheap": 0.75, "mid": 0.25}, 2e-5, 0.8, 0.1)
    >>> t.draw(random.Random(0)) in t.shares
    True
    """

    shares: Mapping[str, float]
    expected_cost_usd: float
    expected_accuracy: float
    multiplier: float

    def __post_init__(self) -> None:
        if not self.shares or any(p < 0 for p in self.shares.values()):
            raise ConfigError(f"teacher shares must be non-negative and non-empty: {self.shares}")
        if not math.isclose(sum(self.shares.values()), 1.0, abs_tol=1e-9):
            raise ConfigError(f"teacher shares must sum to 1, got {sum(self.shares.values())}")

    def draw(self, rng: random.Random) -> str:
        """One expert, drawn with the teacher's shares."""
        names = list(self.shares)
        return rng.choices(names, weights=[self.shares[n] for n in names])[0]


def tier_teacher(stats: Mapping[str, ExpertStats], target_usd: float) -> TierTeacher:
    """The most accurate mixture of at most two experts whose expected cost per query is at
    most ``target_usd`` (the linear program's optimum, module docstring).

    >>> s = {"own": ExpertStats(0.0, 0.5), "big": ExpertStats(4e-5, 0.9)}
    >>> t = tier_teacher(s, 1e-5)
    >>> dict(t.shares), round(t.expected_accuracy, 3), round(t.multiplier, 3)
    ({'own': 0.75, 'big': 0.25}, 0.6, 0.1)
    """
    if not (math.isfinite(target_usd) and target_usd > 0):
        raise ConfigError(f"target_usd must be a finite number > 0, got {target_usd}")
    if not stats:
        raise ConfigError("tier_teacher needs the statistics of at least one expert")
    best: TierTeacher | None = None
    for name, s in stats.items():  # one expert within the target: the constraint is slack
        if s.mean_cost_usd <= target_usd and (best is None or s.accuracy > best.expected_accuracy):
            best = TierTeacher({name: 1.0}, s.mean_cost_usd, s.accuracy, 0.0)
    for (na, a), (nb, b) in itertools.permutations(stats.items(), 2):
        if not (a.mean_cost_usd < target_usd < b.mean_cost_usd and b.accuracy > a.accuracy):
            continue
        p = (target_usd - a.mean_cost_usd) / (b.mean_cost_usd - a.mean_cost_usd)
        acc = a.accuracy + p * (b.accuracy - a.accuracy)
        if best is None or acc > best.expected_accuracy:
            price = (b.accuracy - a.accuracy) / ((b.mean_cost_usd - a.mean_cost_usd) / target_usd)
            best = TierTeacher({na: 1.0 - p, nb: p}, target_usd, acc, price)
    if best is None:
        cheapest = min(stats, key=lambda n: stats[n].mean_cost_usd)
        raise ConfigError(
            f"target ${target_usd:g} is below every expert's mean cost (the least is "
            f"{cheapest!r} at ${stats[cheapest].mean_cost_usd:g} per call): only not calling "
            "meets it; raise the target or add a cheaper (or free, self-hosted) expert"
        )
    return best


def teacher_script(expert: str, subquery: str) -> Callable[[PolicyView], str]:
    """A teacher's run: ask ``expert`` the short ``subquery``, then ``<aggregate/>`` (the
    vote of the replies so far) once it replied, or after a failed call."""

    def script(view: PolicyView) -> str:
        if not view.calls:
            return f'<call expert="{expert}">{escape_text(subquery)}</call>'
        return "<aggregate/>"

    return script
