"""A tiny routing task for training tests: a synthetic outcome table (no shared data needed),
a BPE tokenizer trained on its text and a 2-layer random Llama saved to disk.

Test modules import this module by its own (unique) name, never ``from conftest import``:
the suite has several conftest.py files and that name resolves to whichever came last."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corl_graph.training import QuerySpec, TierTeacher

from corl_graph.budget import TierSet
from corl_graph.experts import OutcomeTable, PriceSheet, ReplayExpert


@dataclass
class TinyTask:
    table: OutcomeTable
    experts: list[ReplayExpert]
    queries: list[QuerySpec]
    model_dir: Path


def _table() -> OutcomeTable:
    rows = []
    for i in range(12):
        ref = str(i * 3)
        for model, correct, cost in (("cheap", i % 2, 1e-6), ("strong", 1, 1e-4)):
            rows.append(
                dict(
                    query_id=f"q{i}",
                    split="train",
                    task="toy",
                    prompt=f"What is {i} times 3?",
                    reference=ref,
                    model=model,
                    correct=float(correct),
                    answer=ref if correct else "0",
                    response=None,
                    input_tokens=20,
                    output_tokens=4,
                    cost_usd=cost,
                )
            )
    return OutcomeTable.from_rows(
        rows, prices={"cheap": PriceSheet(0.05, 0.05), "strong": PriceSheet(4.0, 4.0)}, name="toy"
    )


FAST, SLOW = "fast", "slow"


def fast_slow_table(n: int, *, n_train: int | None = None, name: str = "toy2") -> OutcomeTable:
    """``fast``: cheap, right on half the queries; ``slow``: 20x the price, always right. The
    first ``n_train`` queries (all when None) are the train split, the rest test."""
    n_train = n if n_train is None else n_train
    rows = []
    for i in range(n):
        ref = str(i + 2)
        for model, correct, cost in ((FAST, i % 2, 1e-5), (SLOW, 1, 2e-4)):
            rows.append(
                dict(
                    query_id=f"q{i}",
                    split="train" if i < n_train else "test",
                    task="toy",
                    prompt=f"What is {i} plus 2?",
                    reference=ref,
                    model=model,
                    correct=float(correct),
                    answer=ref if correct else "0",
                    response=None,
                    input_tokens=10,
                    output_tokens=4,
                    cost_usd=cost,
                )
            )
    prices = {FAST: PriceSheet(0.5, 0.5), SLOW: PriceSheet(10.0, 10.0)}
    return OutcomeTable.from_rows(rows, prices=prices, name=name)


SUBQUERY = "solve the query"


def teacher_examples(
    table: OutcomeTable,
    experts: list[ReplayExpert],
    tiers: TierSet,
    teachers: Mapping[str, TierTeacher],
    *,
    seed: int = 0,
) -> tuple[Any, Any, list[Any]]:
    """The first half of the documented warm start on ``table``'s train split: a tokenizer
    trained on its text, a random tiny Llama and one teacher run per (train query, tier) from
    ``warm_start_examples``. Returns (model, tokenizer, examples)."""
    import torch
    from corl_graph.training import (
        RewardConfig,
        reward_from_config,
        tiny_llama,
        tiny_tokenizer,
        warm_start_examples,
    )

    from corl_graph.protocol import render_system_prompt
    from corl_graph.trajectories import Label

    train = table.split("train")
    names = [e.name for e in experts]
    corpus = [render_system_prompt([e.descriptor for e in experts]), SUBQUERY] * 4
    corpus += [q.prompt or "" for q in train]
    tok = tiny_tokenizer(corpus, vocab_size=400, tiers=list(tiers), extra_tokens=names)
    torch.manual_seed(seed)
    lm = tiny_llama(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    examples = warm_start_examples(
        lm,
        tok,
        trajectories=(),
        labels={q.query_id: Label(q.query_id, reference=q.reference) for q in train},
        experts=experts,
        tiers=tiers,
        reward_fn=reward_from_config(RewardConfig()),
        boundary=False,
        max_new_tokens=16,
        teachers=teachers,
        queries={q.query_id: q.prompt or "" for q in train},
        teacher_subquery=SUBQUERY,
        seed=seed,
    )
    return lm, tok, examples


def warm_started_controller(
    table: OutcomeTable,
    experts: list[ReplayExpert],
    tiers: TierSet,
    teachers: Mapping[str, TierTeacher],
    out: Path,
    *,
    epochs: int,
    seed: int = 0,
) -> tuple[Any, Any]:
    """The documented warm start: ``teacher_examples``, then ``sft_warm_start`` into ``out``.
    Returns the trained (model, tokenizer)."""
    from corl_graph.training import sft_warm_start

    lm, tok, examples = teacher_examples(table, experts, tiers, teachers, seed=seed)
    sft_warm_start(
        lm,
        tok,
        examples,
        out,
        epochs=epochs,
        learning_rate=3e-3,
        batch_size=8,
        warmup_steps=10,
        lr_scheduler_type="cosine",
        disable_tqdm=True,
        seed=seed,
    )
    return lm, tok


def tiny_ppo_config(task: Any, out: Path, **kw: Any) -> Any:
    """A PPOConfig for ``task``'s tiny controller on the cheap/strong pool: one iteration of 4
    episodes in minibatches of 2, 6 new tokens, 2 steps, no progress bar; ``kw`` (``tiers``
    among them) sets the rest and overrides."""
    from corl_graph.training import PPOConfig

    base: dict[str, Any] = dict(
        model=str(task.model_dir),
        output_dir=str(out),
        table="unused",
        experts=("cheap", "strong"),
        iterations=1,
        episodes_per_iter=4,
        minibatch_size=2,
        ppo_epochs=1,
        max_new_tokens=6,
        max_steps=2,
        progress=False,
    )
    base.update(kw)
    return PPOConfig(**base)
