"""Learning check: does PPO through the graph teach a tiny controller to route by budget?

Task: GSM8K queries with replayed experts (zeroeval_gsm8k, numbers-only replies), three
experts (cheap / mid / strong) and three tiers whose caps let ``low`` afford only the cheap
expert. The controller is a 2-layer Llama trained from scratch with a tiny BPE vocabulary:

1. format warm start (supervised, tier-agnostic): uniformly random valid actions, so the
   model can speak the protocol but has no preference between experts or tiers;
2. PPO with CORL's reward ``correct * 1[cost <= B_tier]``, tiers drawn per episode.

Writes benchmarks/results/learning_check.json and learning_check.png. Not a timed test:

    python benchmarks/learning_check.py --iterations 24
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from corl_graph.training import (
    PPOConfig,
    PPOTrainer,
    load_queries,
    tiny_llama,
    tiny_tokenizer,
)

from corl_graph.budget import BudgetTier
from corl_graph.experts import OutcomeTable, ReplayExpert
from corl_graph.protocol import render_system_prompt, render_user_prompt

TABLE = str(
    Path(__file__).resolve().parents[2] / "shared" / "data" / "outcomes" / "zeroeval_gsm8k.jsonl.gz"
)
EXPERTS = {  # name -> max_output_tokens (caps the worst-case reservation)
    "Phi-3.5-mini-instruct": 400,
    "gpt-4o-mini-2024-07-18": 700,
    "claude-3-5-sonnet-20240620": 300,
}
TIERS = (BudgetTier("low", 1e-4), BudgetTier("medium", 1e-3), BudgetTier("high", 1e-2))
OUT = Path(__file__).parent / "results"


def numbers_only(table: OutcomeTable) -> OutcomeTable:
    """Drop the recorded reply texts: observations carry the extracted answer only."""
    rows = []
    for qid, q in table.queries.items():
        for m in EXPERTS:
            o = table.outcome(qid, m)
            rows.append(
                dict(
                    query_id=qid,
                    split=q.split,
                    task=q.task,
                    prompt=q.prompt,
                    reference=q.reference,
                    model=m,
                    correct=o.correct,
                    answer=o.answer,
                    response=None,
                    input_tokens=o.input_tokens,
                    output_tokens=o.output_tokens,
                    cost_usd=o.cost_usd,
                )
            )
    return OutcomeTable.from_rows(rows, prices={m: table.prices[m] for m in EXPERTS}, name="gsm8k")


def warm_start(lm, tok, experts, queries, steps: int, seed: int) -> list[float]:  # type: ignore[no-untyped-def]
    """Supervised format warm start on uniformly random valid turns (no tier preference)."""
    rng = random.Random(seed)
    system = render_system_prompt([e.descriptor for e in experts])
    names = [e.name for e in experts]
    opt = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        batch_ids, batch_labels = [], []
        for _ in range(16):
            q = rng.choice(queries)
            tier = rng.choice(TIERS)
            msgs = [
                {"role": "system", "content": system},
                {
                    "role": "user",
                    "content": render_user_prompt(q.text, tier.name, tier.max_usd_per_query),
                },
            ]
            if rng.random() < 0.5:  # first turn: any action
                target = rng.choice(
                    [f'<call expert="{n}">solve</call>' for n in names] + ["<answer>0</answer>"]
                )
            else:  # after an expert replied: usually vote
                first = rng.choice(names)
                msgs += [
                    {"role": "assistant", "content": f'<call expert="{first}">solve</call>'},
                    {
                        "role": "user",
                        "content": f'<expert name="{first}">{rng.randint(0, 99)}</expert>',
                    },
                ]
                target = (
                    "<aggregate/>"
                    if rng.random() < 0.8
                    else f'<call expert="{rng.choice(names)}">solve</call>'
                )
            prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            t_ids = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            batch_ids.append(p_ids + t_ids)
            batch_labels.append([-100] * len(p_ids) + t_ids)
        L = max(len(x) for x in batch_ids)
        ids = torch.tensor([x + [tok.pad_token_id] * (L - len(x)) for x in batch_ids])
        labels = torch.tensor([y + [-100] * (L - len(y)) for y in batch_labels])
        attn = (torch.arange(L)[None] < torch.tensor([len(x) for x in batch_ids])[:, None]).long()
        loss = lm(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    return losses


def plot(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    its = range(1, len(history) + 1)
    for ax, prefix in zip(axes, ("reward", "expert_call_ratio", "cost_usd"), strict=True):
        for tier in [t.name for t in TIERS]:
            ax.plot(its, [h.get(f"{prefix}/{tier}", float("nan")) for h in history], label=tier)
        if prefix == "reward":
            ax.plot(its, [h["reward/mean"] for h in history], "k--", label="mean")
        ax.set_title(prefix)
        ax.set_xlabel("PPO iteration")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=24)
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--warm-steps", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(args.seed)
    table = numbers_only(OutcomeTable.load(TABLE))
    experts = [ReplayExpert(table, m, max_output_tokens=n) for m, n in EXPERTS.items()]
    queries = load_queries(table, "train", field="question", limit=512)
    corpus = [render_system_prompt([e.descriptor for e in experts])] * 20 + [
        q.text for q in queries
    ]
    tok = tiny_tokenizer(
        corpus, vocab_size=768, tiers=[t.name for t in TIERS], extra_tokens=list(EXPERTS)
    )
    lm = tiny_llama(
        len(tok),
        hidden_size=64,
        num_layers=2,
        intermediate_size=128,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    warm = warm_start(lm, tok, experts, queries, args.warm_steps, args.seed)
    model_dir = Path("/tmp/corl_learning_check/warm")
    lm.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    t_warm = time.time() - t0
    config = PPOConfig(
        model=str(model_dir),
        output_dir="/tmp/corl_learning_check/ppo",
        table=TABLE,
        experts=tuple(EXPERTS),
        tiers=TIERS,
        iterations=args.iterations,
        episodes_per_iter=args.episodes,
        minibatch_size=8,
        ppo_epochs=1,
        learning_rate=5e-4,
        kl_coef=0.0,
        ent_coef=0.0,
        max_new_tokens=10,
        max_steps=2,
        max_seq_len=1024,
        reward="corl",
        seed=args.seed,
        progress=True,
    )
    trainer = PPOTrainer(config, lm=lm, tokenizer=tok, experts=experts, queries=queries)
    history = trainer.train()
    result = {
        "command": "python benchmarks/learning_check.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "experts": EXPERTS,
        "tiers": {t.name: t.max_usd_per_query for t in TIERS},
        "reward": "corl: correct * 1[cost <= B_tier]",
        "warm_start_loss": [warm[0], warm[-1]],
        "seconds": {"warm_start": t_warm, "total": time.time() - t0},
        "history": history,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "learning_check.json").write_text(json.dumps(result, indent=1))
    plot(history, OUT / "learning_check.png")
    first, last = history[:4], history[-4:]
    for key in ["reward/mean"] + [
        f"{p}/{t.name}" for p in ("reward", "expert_call_ratio", "cost_usd") for t in TIERS
    ]:
        a = sum(h.get(key, float("nan")) for h in first) / len(first)
        b = sum(h.get(key, float("nan")) for h in last) / len(last)
        print(f"{key:32s} first4 {a:.4g}  last4 {b:.4g}")


if __name__ == "__main__":
    main()
