"""A tiny routing task for training tests: a synthetic outcome table (no shared data needed),
a BPE tokenizer trained on its text and a 2-layer random Llama saved to disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from corl_graph.training import QuerySpec, tiny_llama, tiny_tokenizer

from corl_graph.experts import OutcomeTable, PriceSheet, ReplayExpert
from corl_graph.protocol import render_system_prompt


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


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory: pytest.TempPathFactory) -> TinyTask:
    table = _table()
    experts = [ReplayExpert(table, m) for m in ("cheap", "strong")]
    queries = [QuerySpec(q.query_id, q.prompt or "", q.reference) for q in table.split("train")]
    corpus = [render_system_prompt([e.descriptor for e in experts])] + [q.text for q in queries]
    tok = tiny_tokenizer(corpus * 3, vocab_size=400, extra_tokens=["cheap", "strong"])
    torch.manual_seed(0)
    lm = tiny_llama(
        len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        num_kv_heads=1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model_dir = tmp_path_factory.mktemp("tiny") / "model"
    lm.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return TinyTask(table, experts, queries, model_dir)
