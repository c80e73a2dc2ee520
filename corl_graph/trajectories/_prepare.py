"""Recorded runs to a training set: a replay cache of every expert reply seen, the query set
with the user's labels, and a coverage report (how much PPO/GRPO can replay without a call).

``prepare_traces(store, out_dir, labels=...)`` writes::

    out_dir/
      replay_cache.jsonl   one CachedReply per (expert, normalised sub-query)
      queries.jsonl        query_id, query, reference, feedback, runs, tiers
      runs.jsonl           the selected runs (a JSONL trajectory store: warm start)
      coverage.json        the CoverageReport below
      manifest.json        store, file names, labels, expert prices seen in the runs

``load_prepared(out_dir)`` reads the folder back (what ``corl-graph train --traces`` does).

Labels (``--labels FILE``): JSON lines ``{"query_id": ..., "reference": "42"}`` and/or
``{"query_id": ..., "feedback": 1.0}`` (a user's score in [0, 1] of that query's recorded
answer; with ``"trajectory_id"`` it scores one run only).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from corl_graph._exceptions import ConfigError, DataFormatError
from corl_graph.experts import CachedReply, ReplayCache
from corl_graph.trajectories._record import Trajectory
from corl_graph.trajectories._store import TrajectoryStore, encode, open_store

__all__ = [
    "CoverageReport",
    "Label",
    "PreparedTraces",
    "fit_prices",
    "load_labels",
    "load_prepared",
    "prepare_traces",
]

# Statuses whose reply text is a real answer worth replaying (failed/denied/timeout have none).
_REPLAYABLE = ("ok", "truncated")


@dataclass(frozen=True, slots=True)
class Label:
    """What the user knows about a query: a gold reference and/or feedback scores."""

    query_id: str
    reference: str | None = None
    feedback: float | None = None
    trajectory_feedback: Mapping[str, float] = field(default_factory=dict)

    def score(self, trajectory_id: str) -> float | None:
        """The feedback for one run: its own score, else the query's, else None."""
        return self.trajectory_feedback.get(trajectory_id, self.feedback)


def load_labels(path: str | Path) -> dict[str, Label]:
    """Read a labels JSONL file; lines for the same query are merged."""
    src = Path(path)
    if not src.is_file():
        raise ConfigError(f"labels file {str(src)!r} does not exist")
    refs: dict[str, str] = {}
    fb: dict[str, float] = {}
    per_run: dict[str, dict[str, float]] = defaultdict(dict)
    with src.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                qid = str(row["query_id"])
            except (ValueError, KeyError, TypeError) as exc:
                raise DataFormatError(
                    f"{src}:{i}: need a JSON object with query_id ({exc})"
                ) from exc
            if row.get("reference") is not None:
                refs[qid] = str(row["reference"])
            if row.get("feedback") is not None:
                score = _feedback(row["feedback"], f"{src}:{i}")
                if row.get("trajectory_id"):
                    per_run[qid][str(row["trajectory_id"])] = score
                else:
                    fb[qid] = score
    ids = set(refs) | set(fb) | set(per_run)
    return {q: Label(q, refs.get(q), fb.get(q), dict(per_run.get(q, {}))) for q in ids}


def _feedback(value: Any, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.lower() in ("good", "up", "bad", "down"):
        return 1.0 if value.lower() in ("good", "up") else 0.0
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = -1.0
    if not 0.0 <= score <= 1.0:
        raise DataFormatError(
            f"{where}: feedback must be a number in [0, 1], true/false or good/bad"
        )
    return score


@dataclass(frozen=True, slots=True)
class CoverageReport:
    """How much of the recorded query set can be replayed from the cache.

    - ``pair_coverage``: cached (query, expert) pairs over queries x experts seen;
    - ``queries_fully_covered``: queries with a cached reply from every expert (any rollout
      that sends such a query to any expert replays without a live call under
      ``match="query"``);
    - ``rollouts_replayable``: recorded runs whose every call that reached an expert has a
      cached reply (replaying the same decisions costs nothing).
    """

    trajectories: int
    queries: int
    experts: list[str]
    calls_seen: int
    calls_cached: int
    cache_entries: int
    pairs_cached: int
    pairs_total: int
    pair_coverage: float
    queries_fully_covered: int
    rollouts_replayable: int
    per_expert: dict[str, int]
    labelled_reference: int
    labelled_feedback: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.trajectories} runs, {self.queries} queries, {len(self.experts)} experts; "
            f"cache {self.cache_entries} replies; (query, expert) pairs {self.pairs_cached}/"
            f"{self.pairs_total} ({self.pair_coverage:.0%}); queries fully covered "
            f"{self.queries_fully_covered}/{self.queries}; rollouts replayable "
            f"{self.rollouts_replayable}/{self.trajectories}; labels: {self.labelled_reference} "
            f"references, {self.labelled_feedback} feedback"
        )


@dataclass(slots=True)
class PreparedTraces:
    """The result of ``prepare_traces`` (also written to ``out_dir``)."""

    cache: ReplayCache
    queries: list[dict[str, Any]]
    trajectories: list[Trajectory]
    labels: dict[str, Label]
    coverage: CoverageReport
    out_dir: Path | None = None
    # expert -> {input_usd_per_mtok, output_usd_per_mtok, max_output_tokens}, fitted to the
    # recorded calls (see ``fit_prices``); what a trainer uses when given no price sheet.
    prices: dict[str, dict[str, float]] = field(default_factory=dict)


def build_cache(trajectories: Iterable[Trajectory]) -> tuple[ReplayCache, int, int]:
    """The cache of every replayable reply, with (calls seen, calls cached)."""
    cache, seen, cached = ReplayCache(), 0, 0
    for t in trajectories:
        for c in t.calls:
            if c.status == "denied":
                continue  # never reached an expert
            seen += 1
            if c.status in _REPLAYABLE and c.text:
                cached += 1
                cache.add(
                    CachedReply(
                        expert=c.expert,
                        subquery=c.subquery,
                        query_id=t.query_id,
                        text=c.text,
                        answer=c.answer,
                        input_tokens=c.input_tokens,
                        output_tokens=c.output_tokens,
                        cost_usd=c.cost_usd,
                    )
                )
    return cache, seen, cached


def _coverage(
    runs: list[Trajectory], cache: ReplayCache, seen: int, cached: int, labels: Mapping[str, Label]
) -> CoverageReport:
    qids = sorted({t.query_id for t in runs})
    experts = sorted({c.expert for t in runs for c in t.calls} | set(cache.experts))
    pairs = sum(1 for q in qids for e in experts if cache.has_query(e, q))
    full = sum(1 for q in qids if experts and all(cache.has_query(e, q) for e in experts))
    replayable = sum(
        1
        for t in runs
        if all(
            cache.get(c.expert, c.subquery, t.query_id, match="subquery") is not None
            for c in t.calls
            if c.status != "denied"
        )
    )
    per_expert: dict[str, int] = defaultdict(int)
    for r in cache:
        per_expert[r.expert] += 1
    in_set = [labels[q] for q in qids if q in labels]
    return CoverageReport(
        trajectories=len(runs),
        queries=len(qids),
        experts=experts,
        calls_seen=seen,
        calls_cached=cached,
        cache_entries=len(cache),
        pairs_cached=pairs,
        pairs_total=len(qids) * len(experts),
        pair_coverage=pairs / max(len(qids) * len(experts), 1),
        queries_fully_covered=full,
        rollouts_replayable=replayable,
        per_expert=dict(per_expert),
        labelled_reference=sum(1 for lab in in_set if lab.reference is not None),
        labelled_feedback=sum(
            1 for lab in in_set if lab.feedback is not None or lab.trajectory_feedback
        ),
    )


def _query_set(runs: list[Trajectory], labels: Mapping[str, Label]) -> list[dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for t in runs:
        row = by_id.setdefault(
            t.query_id, {"query_id": t.query_id, "query": t.query, "runs": 0, "tiers": []}
        )
        row["runs"] += 1
        if t.tier not in row["tiers"]:
            row["tiers"].append(t.tier)
    for qid, row in by_id.items():
        label = labels.get(qid)
        row["reference"] = label.reference if label else None
        row["feedback"] = label.feedback if label else None
    return list(by_id.values())


def prepare_traces(
    store: str | TrajectoryStore,
    out_dir: str | Path | None = None,
    *,
    labels: str | Path | Mapping[str, Label] | None = None,
    tier: str | None = None,
    tenant: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> PreparedTraces:
    """Read recorded runs and build the cache, query set and coverage (written to
    ``out_dir`` when given)."""
    source = open_store(store) if isinstance(store, str) else store
    runs = list(source.iter(tier=tier, tenant=tenant, since=since, until=until))
    if not runs:
        raise ConfigError(
            f"no trajectories in {store!r} for these filters; route queries with "
            "Router(trajectory_sink=store.append) first"
        )
    lab = load_labels(labels) if isinstance(labels, str | Path) else dict(labels or {})
    cache, seen, cached = build_cache(runs)
    prepared = PreparedTraces(
        cache,
        _query_set(runs, lab),
        runs,
        lab,
        _coverage(runs, cache, seen, cached, lab),
        prices=fit_prices(runs),
    )
    if out_dir is not None:
        prepared.out_dir = write_prepared(prepared, out_dir, store=str(store))
    return prepared


def write_prepared(prepared: PreparedTraces, out_dir: str | Path, *, store: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepared.cache.save(out / "replay_cache.jsonl")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for row in prepared.queries:
            fh.write(json.dumps(row) + "\n")
    with (out / "runs.jsonl").open("w", encoding="utf-8") as fh:
        for t in prepared.trajectories:
            fh.write(json.dumps(encode(t), separators=(",", ":")) + "\n")
    (out / "coverage.json").write_text(json.dumps(prepared.coverage.as_dict(), indent=2))
    manifest = {
        "store": store,
        "replay_cache": "replay_cache.jsonl",
        "queries": "queries.jsonl",
        "runs": "runs.jsonl",
        "coverage": "coverage.json",
        "prices": prepared.prices,
        "labels": {
            q: {
                "reference": lab.reference,
                "feedback": lab.feedback,
                "runs": dict(lab.trajectory_feedback),
            }
            for q, lab in prepared.labels.items()
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def fit_prices(runs: Iterable[Trajectory]) -> dict[str, dict[str, float]]:
    """Per expert, the list price that explains its recorded calls: least squares of
    ``cost = in_tokens * p_in + out_tokens * p_out`` (non-negative), in USD per million
    tokens, and the longest recorded reply. Calls of one shape only (the same input/output
    ratio every time) cannot separate the two prices: both get the mean price per token.
    An estimate for the controller's prompt; give the real price sheet where you have it."""
    import numpy as np

    rows: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    for t in runs:
        for c in t.calls:
            if c.status in _REPLAYABLE and c.input_tokens + c.output_tokens > 0:
                rows[c.expert].append((c.input_tokens, c.output_tokens, c.cost_usd))
    out: dict[str, dict[str, float]] = {}
    for name, calls in sorted(rows.items()):
        x = np.array([(i, o) for i, o, _ in calls], dtype=np.float64)
        y = np.array([c for _, _, c in calls], dtype=np.float64)
        if np.linalg.matrix_rank(x) == 2:
            p_in, p_out = (max(float(v), 0.0) for v in np.linalg.lstsq(x, y, rcond=None)[0])
        else:
            p_in = p_out = float(y.sum() / x.sum())
        out[name] = {
            "input_usd_per_mtok": _round(p_in * 1e6),
            "output_usd_per_mtok": _round(p_out * 1e6),
            "max_output_tokens": float(max(o for _, o, _ in calls)),
        }
    return out


def _round(usd_per_mtok: float) -> float:
    # 6 significant digits: stable across runs, enough for a price sheet
    return float(f"{usd_per_mtok:.6g}") if math.isfinite(usd_per_mtok) else 0.0


def load_prepared(out_dir: str | Path) -> PreparedTraces:
    """Read a folder written by ``prepare_traces`` (``corl-graph traces prepare``)."""
    src = Path(out_dir)
    if not (src / "manifest.json").is_file():
        raise ConfigError(
            f"{str(src)!r} is not a prepared traces folder (no manifest.json); build one with "
            "corl-graph traces prepare --store URL --out DIR"
        )
    try:
        manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
        coverage = CoverageReport(
            **json.loads((src / manifest.get("coverage", "coverage.json")).read_text())
        )
        with (src / manifest.get("queries", "queries.jsonl")).open(encoding="utf-8") as fh:
            queries = [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError, TypeError) as exc:
        raise DataFormatError(f"prepared traces {str(src)!r}: {exc}") from exc
    runs_file = src / manifest.get("runs", "runs.jsonl")
    if not runs_file.is_file():
        raise ConfigError(
            f"{str(runs_file)!r} is missing: re-run corl-graph traces prepare (folders from "
            "before runs.jsonl was written lack it)"
        )
    labels = {
        q: Label(q, lab.get("reference"), lab.get("feedback"), dict(lab.get("runs") or {}))
        for q, lab in (manifest.get("labels") or {}).items()
    }
    runs = list(open_store(str(runs_file)).iter())
    prices = manifest.get("prices")
    return PreparedTraces(
        ReplayCache.load(src / manifest.get("replay_cache", "replay_cache.jsonl")),
        queries,
        runs,
        labels,
        coverage,
        out_dir=src,
        prices=dict(prices) if prices is not None else fit_prices(runs),
    )
