"""Fixtures for the training tests (the task itself lives in training_tasks.py)."""

from __future__ import annotations

import pytest
import torch
from corl_graph.training import QuerySpec, tiny_llama, tiny_tokenizer
from training_tasks import TinyTask, _table

from corl_graph.experts import ReplayExpert
from corl_graph.protocol import render_system_prompt


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
