"""Cost report over recorded runs: queries, expert-call ratio, tokens, dollars and cap hits.

A pure function of trajectories, so the same numbers come out of a JSONL file, a SQLite
store or a list built by hand in a test. Rows are grouped by any combination of tier, tenant
and expert; one *section* per grouping::

    section "tier"     low     queries 120  ratio 0.35  $0.0123  cap hits 4
                       high    queries  80  ratio 0.90  $0.4410  cap hits 0
    section "expert"   gpt-4o  queries  70  ratio 0.35  $0.4012  denied 3

In an expert row, ``queries`` counts the runs that asked that expert (refused calls included)
and the ratio is the share of all runs in the same tier/tenant scope that reached it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from corl_graph._exceptions import ConfigError
from corl_graph.protocol import ExpertCall
from corl_graph.trajectories import Trajectory

__all__ = ["DEFAULT_SECTIONS", "CostReport", "Dimension", "ReportRow", "summarize"]

Dimension = Literal["tier", "tenant", "expert"]
DIMENSIONS: tuple[Dimension, ...] = ("tier", "tenant", "expert")
DEFAULT_SECTIONS: tuple[tuple[Dimension, ...], ...] = (("tier",), ("expert",), ("tenant",))

# Call outcomes that reached an expert and may have cost money; "denied" never did.
_REACHED = frozenset({"ok", "truncated", "failed", "timeout"})


@dataclass(frozen=True, slots=True)
class ReportRow:
    """Totals of one group. ``key`` holds the group's values, in the section's dimensions."""

    key: tuple[str, ...]
    queries: int = 0
    scope_queries: int = 0
    queries_with_calls: int = 0
    expert_calls: int = 0
    denied_calls: int = 0
    failed_calls: int = 0
    budget_exhausted: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def expert_call_ratio(self) -> float:
        """Share of the runs in scope that reached an expert (this one, in an expert row)."""
        return self.queries_with_calls / self.scope_queries if self.scope_queries else 0.0

    @property
    def cost_per_query(self) -> float:
        return self.cost_usd / self.queries if self.queries else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["key"] = list(self.key)
        out["expert_call_ratio"] = self.expert_call_ratio
        out["cost_per_query"] = self.cost_per_query
        return out


@dataclass(frozen=True, slots=True)
class CostReport:
    """All runs' totals plus one list of rows per requested grouping ("tier", "tier,tenant"…)."""

    total: ReportRow
    sections: Mapping[str, tuple[ReportRow, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total.to_dict(),
            "sections": {
                name: {"by": name.split(","), "rows": [r.to_dict() for r in rows]}
                for name, rows in self.sections.items()
            },
        }


@dataclass(slots=True)
class _Acc:
    queries: int = 0
    with_calls: int = 0
    calls: int = 0
    denied: int = 0
    failed: int = 0
    exhausted: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    def add(self, run: Trajectory, calls: Sequence[ExpertCall], cost: float) -> None:
        reached = [c for c in calls if c.status in _REACHED]
        self.queries += 1
        self.with_calls += bool(reached)
        self.calls += len(reached)
        self.denied += sum(c.status == "denied" for c in calls)
        self.failed += sum(c.status in ("failed", "timeout") for c in calls)
        self.exhausted += run.stop_reason == "budget_exhausted"
        self.input_tokens += sum(c.input_tokens for c in calls)
        self.output_tokens += sum(c.output_tokens for c in calls)
        self.cost += cost

    def row(self, key: tuple[str, ...], scope: int) -> ReportRow:
        return ReportRow(
            key=key,
            queries=self.queries,
            scope_queries=scope,
            queries_with_calls=self.with_calls,
            expert_calls=self.calls,
            denied_calls=self.denied,
            failed_calls=self.failed,
            budget_exhausted=self.exhausted,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost,
        )


def summarize(
    trajectories: Iterable[Trajectory],
    sections: Sequence[Sequence[str]] = DEFAULT_SECTIONS,
) -> CostReport:
    """Summarise runs; ``sections`` lists the groupings, e.g. ``[("tier",), ("tier", "expert")]``.

    >>> from corl_graph.protocol import ExpertCall
    >>> run = Trajectory("2+2?", "low", "acme", "q1", cost_usd=0.002,
    ...                  calls=[ExpertCall("small", "2+2?", "ok", cost_usd=0.002)])
    >>> report = summarize([run])
    >>> report.total.queries, report.sections["expert"][0].key, report.total.expert_call_ratio
    (1, ('small',), 1.0)
    """
    runs = list(trajectories)
    checked = [_check_dimensions(dims) for dims in sections]
    total = _section(runs, ())
    return CostReport(
        total=total[0] if total else ReportRow((), 0),
        sections={",".join(dims): tuple(_section(runs, dims)) for dims in checked},
    )


def _check_dimensions(dims: Sequence[str]) -> tuple[Dimension, ...]:
    out: list[Dimension] = []
    for d in dims:
        if d not in DIMENSIONS:
            raise ConfigError(
                f"cannot group a report by {d!r}; choose from {', '.join(DIMENSIONS)}"
            )
        out.append(d)
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"a report grouping needs distinct dimensions, got {list(dims)}")
    return tuple(out)


def _section(runs: Sequence[Trajectory], dims: tuple[Dimension, ...]) -> list[ReportRow]:
    accs: dict[tuple[str, ...], _Acc] = defaultdict(_Acc)
    scope_of: dict[tuple[str, ...], tuple[str, ...]] = {}
    scope_queries: Counter[tuple[str, ...]] = Counter()
    for run in runs:
        values = {"tier": run.tier, "tenant": run.tenant}
        scope = tuple(values[d] for d in dims if d != "expert")
        scope_queries[scope] += 1
        if "expert" not in dims:
            accs[scope].add(run, run.calls, run.cost_usd)
            scope_of[scope] = scope
            continue
        by_expert: dict[str, list[ExpertCall]] = defaultdict(list)
        for call in run.calls:
            by_expert[call.expert].append(call)
        for expert, calls in by_expert.items():
            key = tuple(expert if d == "expert" else values[d] for d in dims)
            accs[key].add(run, calls, sum(c.cost_usd for c in calls))
            scope_of[key] = scope
    return [accs[k].row(k, scope_queries[scope_of[k]]) for k in sorted(accs)]
