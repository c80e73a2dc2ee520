"""Fine-tune a controller on your own graph traces, end to end, in seconds (tiny sizes).

1. route a few queries with the router recording every run into a trajectory store;
2. prepare: replay cache of every expert reply, query set with labels, coverage report
   (the CLI: ``corl-graph traces prepare --store URL --out DIR --labels FILE``);
3. warm start: SFT on the best recorded run per tier plus boundary runs (loss on controller
   tokens only);
4. one PPO iteration on the cached experts (a miss is a failed call: ``on_miss="unavailable"``).

The experts here are arithmetic stand-ins and the controller is a 2-layer random Llama;
in production the store holds your users' runs and the model is e.g. SmolLM2 or Qwen.

    python examples/train_from_traces.py [OUT_DIR]

The same steps from the command line, on a store your router wrote (docs/training.md):

    corl-graph traces prepare --store sqlite:///runs.db --out prepared/ --labels labels.jsonl
    corl-graph train --algo sft --traces prepared/ --model ./controller --output-dir runs/warm
    corl-graph train --algo ppo --traces prepared/ --model runs/warm/final \
        --output-dir runs/ppo --on-miss unavailable        # or --algo grpo
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from pathlib import Path

import torch
from corl_graph.training import (
    PPOConfig,
    PPOTrainer,
    QuerySpec,
    exact_match,
    make_reward,
    sft_warm_start,
    tiny_llama,
    tiny_tokenizer,
    warm_start_examples,
)

from corl_graph.budget import BudgetTier, TierSet
from corl_graph.experts import CachedExpert, Expert, ExpertReply, ExpertRequest, PriceSheet
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import Cascade
from corl_graph.protocol import render_system_prompt
from corl_graph.trajectories import Label, open_store, prepare_traces

TIERS = TierSet([BudgetTier("low", 1e-5), BudgetTier("high", 1e-3)])
QUERIES = {f"q{a}{b}": (f"What is {a} + {b}?", str(a + b)) for a in (2, 5, 7) for b in (3, 4)}


class Adder(Expert):
    """A stand-in for an LLM API: adds two numbers; the cheap one is wrong when a > 5."""

    provider = "example"

    def __init__(self, name: str, price: PriceSheet, sloppy: bool):
        super().__init__(name, price, max_output_tokens=16, max_retries=0)
        self.sloppy = sloppy

    async def agenerate(self, request: ExpertRequest) -> ExpertReply:
        a, b = (int(x) for x in re.findall(r"\d+", request.subquery)[:2])
        total = a + b + (1 if self.sloppy and a > 5 else 0)
        return ExpertReply(f"The answer is {total}.", 12, 6, answer=str(total))


async def record(url: str) -> None:
    experts = [
        Adder("small", PriceSheet(0.1, 0.1), True),
        Adder("big", PriceSheet(5.0, 5.0), False),
    ]
    store = open_store(url)
    router = Router(
        RouterConfig(
            experts=experts, policy=Cascade(["small", "big"]), tiers=TIERS, default_tier="high"
        ),
        trajectory_sink=store.append,  # every run is recorded
    )
    for tier in TIERS:
        for qid, (text, _) in QUERIES.items():
            await router.arun(text, tier=tier, query_id=qid)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="corl-traces-"))
    url = str(out / "runs.jsonl")
    asyncio.run(record(url))

    labels = {q: Label(q, reference=ref) for q, (_, ref) in QUERIES.items()}
    prepared = prepare_traces(url, out / "prepared", labels=labels)
    print("coverage:", prepared.coverage.summary())

    # The trainable controller and the experts it will meet in training: the cache.
    experts = [
        CachedExpert(prepared.cache, name, price, match="query", on_miss="unavailable")
        for name, price in (("small", PriceSheet(0.1, 0.1)), ("big", PriceSheet(5.0, 5.0)))
    ]
    corpus = [render_system_prompt([e.descriptor for e in experts])]
    corpus += [t for t, _ in QUERIES.values()]
    tok = tiny_tokenizer(corpus * 2, vocab_size=400, extra_tokens=["small", "big"])
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

    reward = make_reward(exact_match)
    examples = warm_start_examples(
        lm,
        tok,
        trajectories=prepared.trajectories,
        labels=prepared.labels,
        experts=experts,
        tiers=TIERS,
        reward_fn=reward,
    )
    print(
        f"warm start: {len(examples)} sequences "
        f"({sum(e.source == 'recorded' for e in examples)} recorded, rest boundary)"
    )
    sft_warm_start(
        lm,
        tok,
        examples,
        out / "warm",
        epochs=1,
        batch_size=8,
        learning_rate=1e-3,
        disable_tqdm=True,
    )

    config = PPOConfig(
        model=str(out / "warm"),
        output_dir=str(out / "ppo"),
        table="(cache)",
        experts=("small", "big"),
        tiers=tuple(TIERS.values()),
        iterations=1,
        episodes_per_iter=4,
        minibatch_size=4,
        ppo_epochs=1,
        max_new_tokens=8,
        max_steps=2,
        progress=False,
    )
    queries = [QuerySpec(q, t, ref) for q, (t, ref) in QUERIES.items()]
    trainer = PPOTrainer(config, lm=lm, tokenizer=tok, experts=experts, queries=queries)
    metrics = trainer.train()[-1]
    print(
        f"ppo: reward/mean {metrics['reward/mean']:.2f}, cache hits "
        f"{sum(e.hits for e in experts)}, misses {sum(e.misses for e in experts)}"
    )
    print(f"checkpoint: {out / 'ppo' / 'final'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
