"""Recorded runs for the traces tests: a toy outcome table, replayed experts, and a store
filled by routing its queries with baseline policies (no torch, no shared data)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from corl_graph.budget import BudgetTier, TierSet
from corl_graph.experts import OutcomeTable, PriceSheet, ReplayExpert
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import ControllerOnly, Policy
from corl_graph.trajectories import Label, open_store

TIERS = TierSet([BudgetTier("low", 2e-5), BudgetTier("high", 1e-3)])


def toy_table(n: int = 8) -> OutcomeTable:
    rows = []
    for i in range(n):
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
                    answer=ref if correct else "-1",
                    response=f"The answer is {ref if correct else -1}.",
                    input_tokens=20,
                    output_tokens=4,
                    cost_usd=cost,
                )
            )
    prices = {"cheap": PriceSheet(0.05, 0.05), "strong": PriceSheet(4.0, 4.0)}
    return OutcomeTable.from_rows(rows, prices=prices, name="toy")


def toy_experts(table: OutcomeTable) -> list[ReplayExpert]:
    return [ReplayExpert(table, m) for m in ("cheap", "strong")]


async def _record(
    url: str, table: OutcomeTable, policy: Policy, qids: list[str], tier: str
) -> None:
    store = open_store(url)
    router = Router(
        RouterConfig(experts=toy_experts(table), policy=policy, tiers=TIERS, default_tier=tier),
        trajectory_sink=store.append,
    )
    for q in qids:
        await router.arun(table.queries[q].prompt or q, tier=tier, query_id=q)


def recorded_store(tmp: Path, table: OutcomeTable) -> str:
    """Runs: every query with the cheap expert (low tier), half of them with the strong one
    (high tier), so the strong expert covers only half the queries."""
    url = str(tmp / "runs.jsonl")
    qids = sorted(table.queries)
    asyncio.run(_record(url, table, ControllerOnly("cheap"), qids, "low"))
    asyncio.run(_record(url, table, ControllerOnly("strong"), qids[: len(qids) // 2], "high"))
    return url


def tiny_controller(table: OutcomeTable, seed: int = 0) -> tuple[Any, Any]:
    """A 2-layer random Llama and a BPE tokenizer trained on the task's text (seconds)."""
    import torch
    from corl_graph.training import tiny_llama, tiny_tokenizer

    from corl_graph.protocol import render_system_prompt

    experts = toy_experts(table)
    corpus = [render_system_prompt([e.descriptor for e in experts])]
    corpus += [q.prompt or "" for q in table.queries.values()]
    tok = tiny_tokenizer(corpus * 3, vocab_size=400, extra_tokens=["cheap", "strong"])
    torch.manual_seed(seed)
    lm = tiny_llama(
        len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        num_kv_heads=1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return lm, tok


def all_labels(table: OutcomeTable) -> dict[str, Label]:
    return {q: Label(q, reference=info.reference) for q, info in table.queries.items()}
