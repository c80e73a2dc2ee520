"""Files for the LLM-controller rows of ``corl-graph eval``: a tiny table with train and test
splits, random query embeddings, a tiny random checkpoint, and the fake OpenAI server of
tests/reliability (loaded by path: test folders are not packages)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from corl_graph.evaluation import save_embeddings

MODELS = {"c": (1.0, 0.5), "s": (10.0, 1.0)}  # name -> (USD per Mtok, accuracy)
CAPS = "low=0.0002,high=0.01"


def write_table(folder: Path, n: int = 8) -> Path:
    """``toy.jsonl.gz`` (+ models.json): half train, half test; "s" is always right."""
    rows = []
    for i in range(n):
        ref = str(3 * i)
        for model, (price, acc) in MODELS.items():
            right = acc == 1.0 or i % 2 == 0
            rows.append(
                dict(
                    query_id=f"q{i}",
                    split="train" if i < n // 2 else "test",
                    task="toy",
                    prompt=f"What is {i} times 3?",
                    reference=ref,
                    model=model,
                    correct=float(right),
                    answer=ref if right else "-1",
                    response=f"The answer is {ref if right else -1}.",
                    input_tokens=20,
                    output_tokens=4,
                    cost_usd=24 * price / 1e6,
                )
            )
    path = folder / "toy.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    prices = {
        m: {"input_usd_per_mtok": p, "output_usd_per_mtok": p} for m, (p, _) in MODELS.items()
    }
    (folder / "toy.models.json").write_text(json.dumps(prices))
    return path


def write_embeddings(folder: Path, n: int = 8) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "toy_emb.npz"
    save_embeddings(path, {f"q{i}": rng.normal(size=16).astype(np.float32) for i in range(n)})
    return path


def write_checkpoint(folder: Path, seed: int) -> Path:
    """A 2-layer random Llama with a chat template: what corl-graph train saves, in small."""
    import torch
    from corl_graph.training import tiny_llama, tiny_tokenizer

    from corl_graph.protocol import ExpertDescriptor, render_system_prompt

    corpus = [render_system_prompt([ExpertDescriptor(m, p, p) for m, (p, _) in MODELS.items()])]
    corpus += [f"What is {i} times 3?" for i in range(8)]
    tok = tiny_tokenizer(corpus * 3, vocab_size=320, extra_tokens=list(MODELS))
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
    lm.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def fake_openai() -> ModuleType:
    """tests/reliability/fake_openai.py, imported once under its own name."""
    if "fake_openai" in sys.modules:
        return sys.modules["fake_openai"]
    path = Path(__file__).resolve().parents[1] / "reliability" / "fake_openai.py"
    spec = importlib.util.spec_from_file_location("fake_openai", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_openai"] = module
    spec.loader.exec_module(module)
    return module
