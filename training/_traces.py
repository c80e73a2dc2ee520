"""Training on a company's own traces: the task a prepared folder describes, and the warm start.

``corl-graph traces prepare`` writes a folder (replay cache, query set with labels, the runs,
coverage); ``traces_task`` turns it into what PPO, GRPO and the warm start consume::

    prepared/ ──► CachedExpert per expert (price: the live expert's, else fitted to the runs)
              │     miss ─► on_miss="unavailable": a failed call
              │           └ on_miss="live": the real expert, reserved and settled on the
              │             ledger under tenant "training" (limit: training_budget_usd)
              └─► QuerySpec per query with a reference (gold label, else the answer of a
                  recorded run the user scored >= 0.5)

``CacheCounters`` turns the experts' hit / miss / live-spend counters into per-iteration
metrics; ``train_sft`` is ``--algo sft``: ``warm_start_examples`` + ``sft_warm_start`` to
``OUTPUT_DIR/final``, which ``--algo ppo --model OUTPUT_DIR/final`` continues from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corl_graph._exceptions import ConfigError
from corl_graph.budget import Ledger, TenantBudget, open_ledger
from corl_graph.experts import CachedExpert, Expert, OutcomeTable, PriceSheet, ReplayExpert
from corl_graph.trajectories import Label, PreparedTraces, Trajectory, load_prepared

from ._config import SFTConfig, TrainConfig
from ._metrics import MetricsWriter
from ._rewards import reward_from_config
from ._rollout import QuerySpec, load_queries

__all__ = [
    "TRAINING_TENANT",
    "CacheCounters",
    "TracesTask",
    "traces_task",
    "train_sft",
    "training_task",
]

TRAINING_TENANT = "training"
# A user's score at or above this marks a recorded answer as right (a pseudo-reference).
_GOOD_FEEDBACK = 0.5


@dataclass
class TracesTask:
    """Experts, queries and labels of a prepared folder, ready for a trainer."""

    prepared: PreparedTraces
    experts: list[CachedExpert]
    queries: list[QuerySpec]
    ledger: Ledger | None
    unlabelled: int  # queries without a reference or a positively scored run: not trained on
    owns_ledger: bool = False  # opened by traces_task from cfg.ledger_url: close() closes it

    def close(self) -> None:
        """Close the training-budget ledger if ``traces_task`` opened it (its connections
        and files); one the caller passed in stays the caller's. Safe to call twice."""
        if self.ledger is not None and self.owns_ledger:
            ledger, self.ledger = self.ledger, None
            asyncio.run(ledger.aclose())


def _reference(
    row: Mapping[str, Any], label: Label | None, runs: Sequence[Trajectory]
) -> str | None:
    if row.get("reference") is not None:
        return str(row["reference"])
    if label is None:
        return None
    scored = [
        (s, t.answer)
        for t in runs
        if t.answer and (s := label.score(t.trajectory_id)) is not None and s >= _GOOD_FEEDBACK
    ]
    return max(scored, key=lambda x: x[0])[1] if scored else None


def _expert(
    name: str,
    prepared: PreparedTraces,
    cfg: TrainConfig,
    live: Expert | None,
    ledger: Ledger | None,
) -> CachedExpert:
    fitted = prepared.prices.get(name)
    if live is None and fitted is None:
        raise ConfigError(
            f"expert {name!r} has no price: it made no recorded call and is not in the live "
            "experts config (--live-experts); add it there or drop it from --experts"
        )
    price = None
    if live is None and fitted is not None:
        price = PriceSheet(fitted["input_usd_per_mtok"], fitted["output_usd_per_mtok"])
    return CachedExpert(
        prepared.cache,
        name,
        price,
        live=live,
        on_miss=cfg.on_miss,
        ledger=ledger if cfg.on_miss == "live" else None,
        tenant=TRAINING_TENANT,
        match=cfg.cache_match,
    )


def traces_task(
    cfg: TrainConfig,
    *,
    live: Mapping[str, Expert] | None = None,
    ledger: Ledger | None = None,
    world_size: int = 1,
) -> TracesTask:
    """The task of ``cfg.traces``. ``live`` maps expert names to the real experts (needed for
    ``on_miss="live"``; with "unavailable" they only lend their price sheets). The training
    tenant's budget is set on ``ledger`` (default ``open_ledger(cfg.ledger_url)``); an
    in-memory ledger is per process, so each of ``world_size`` ranks gets its share."""
    if cfg.traces is None:
        raise ConfigError("traces_task needs the config's traces= (a prepared folder)")
    if not Path(cfg.traces).is_dir():
        raise ConfigError(
            f"prepared traces folder {cfg.traces!r} does not exist; build it with "
            "corl-graph traces prepare --store URL --out DIR"
        )
    prepared = load_prepared(cfg.traces)
    live = dict(live or {})
    owns_ledger = False
    if cfg.on_miss == "live":
        if not live:
            raise ConfigError(
                "on_miss='live' needs the real experts: corl-graph train --live-experts "
                "CONFIG (the serve config format), or live= in Python"
            )
        owns_ledger = ledger is None
        ledger = ledger or open_ledger(cfg.ledger_url)
        budget = float(cfg.training_budget_usd or 0.0)
        if cfg.ledger_url.startswith("memory://"):
            budget /= max(world_size, 1)
        asyncio.run(ledger.set_tenant(TenantBudget(TRAINING_TENANT, budget, "total")))
    names = list(cfg.experts) or sorted(
        set(prepared.cache.experts) | set(prepared.prices) | set(live)
    )
    experts = [_expert(n, prepared, cfg, live.get(n), ledger) for n in names]
    runs_by_query: dict[str, list[Trajectory]] = {}
    for t in prepared.trajectories:
        runs_by_query.setdefault(t.query_id, []).append(t)
    queries, unlabelled = [], 0
    for row in prepared.queries:
        qid = str(row["query_id"])
        ref = _reference(row, prepared.labels.get(qid), runs_by_query.get(qid, []))
        if ref is None:
            unlabelled += 1
            continue
        queries.append(QuerySpec(qid, str(row["query"]), ref))
    if cfg.max_queries is not None:
        queries = queries[: cfg.max_queries]
    if not queries and not isinstance(cfg, SFTConfig):
        raise ConfigError(
            f"no query of {cfg.traces!r} has a reference or a positively scored run: give "
            "labels to corl-graph traces prepare --labels FILE"
        )
    return TracesTask(prepared, experts, queries, ledger, unlabelled, owns_ledger)


class CacheCounters:
    """Hits, misses and live spend of the cached experts since the last ``delta()``."""

    FIELDS = ("hits", "misses", "live_calls", "refused", "live_usd")

    def __init__(self, experts: Sequence[Expert]):
        self.experts = [e for e in experts if isinstance(e, CachedExpert)]
        self._last = self._totals()

    def _totals(self) -> dict[str, float]:
        return {f: float(sum(getattr(e, f) for e in self.experts)) for f in self.FIELDS}

    def delta(self) -> dict[str, float]:
        """``cache/<field>`` for this period and ``cache/live_usd_total`` (empty without
        cached experts); ``cache/refused``: misses the training budget could not pay for."""
        if not self.experts:
            return {}
        now = self._totals()
        out = {f"cache/{f}": now[f] - self._last[f] for f in self.FIELDS}
        out["cache/live_usd_total"] = now["live_usd"]
        self._last = now
        return out


def training_task(
    cfg: TrainConfig,
    experts: Sequence[Expert] | None = None,
    queries: Sequence[QuerySpec] | None = None,
    *,
    world_size: int = 1,
) -> tuple[list[Expert], list[QuerySpec], TracesTask | None]:
    """The experts and queries every trainer runs on: those given, the rest from the
    config's traces (``traces_task``; the caller closes the returned task) or outcome table
    (replayed experts, the ``split``'s queries)."""
    task = None
    if cfg.traces is not None and (experts is None or queries is None):
        task = traces_task(cfg, world_size=world_size)
        experts, queries = experts or task.experts, queries or task.queries
    elif experts is None or queries is None:
        table = OutcomeTable.load(str(cfg.table))
        experts = experts or [ReplayExpert(table, m) for m in cfg.experts]
        queries = queries or load_queries(
            table, cfg.split, field=cfg.query_field, limit=cfg.max_queries
        )
    return list(experts), list(queries), task


def train_sft(
    cfg: SFTConfig,
    *,
    task: TracesTask | None = None,
    lm: Any = None,
    tokenizer: Any = None,
) -> Path:
    """The warm start: re-enact the best recorded run per (query, tier) and the boundary
    runs with the cached experts, fine-tune on controller tokens only, save
    ``OUTPUT_DIR/final``; one line of metrics in ``metrics.jsonl``. Returns the folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ._warmstart import sft_warm_start, warm_start_examples

    task = task or traces_task(cfg)
    tok = tokenizer or AutoTokenizer.from_pretrained(cfg.model)
    model = lm or AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32)
    reward = reward_from_config(cfg.reward_config)
    counters = CacheCounters(task.experts)
    examples = warm_start_examples(
        model,
        tok,
        trajectories=task.prepared.trajectories,
        labels=task.prepared.labels,
        experts=task.experts,
        tiers=cfg.tier_set,
        reward_fn=reward,
        boundary=cfg.sft_boundary,
        min_reward=cfg.sft_min_reward,
        max_new_tokens=cfg.max_new_tokens,
    )
    final = Path(cfg.output_dir) / "final"
    trainer = sft_warm_start(
        model,
        tok,
        examples,
        final,
        epochs=cfg.sft_epochs,
        learning_rate=cfg.learning_rate,
        batch_size=cfg.minibatch_size,
        max_length=cfg.max_seq_len,
        seed=cfg.seed,
        disable_tqdm=not cfg.progress,
    )
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "sft/examples": float(len(examples)),
        "sft/recorded": float(sum(e.source == "recorded" for e in examples)),
        "sft/boundary": float(sum(e.source != "recorded" for e in examples)),
        "sft/steps": float(trainer.state.global_step),
        **({"sft/loss_first": losses[0], "sft/loss_last": losses[-1]} if losses else {}),
        **counters.delta(),
    }
    writer = MetricsWriter(cfg.metrics_file or Path(cfg.output_dir) / "metrics.jsonl")
    writer.write(trainer.state.global_step, metrics)
    writer.close()
    return final
