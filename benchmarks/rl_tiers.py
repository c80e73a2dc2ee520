"""RL with per-tier spend targets: does PPO-Lagrangian teach a tiny controller to spend by tier?

Task: the TRAIN split of zeroeval_gsm8k (questions only; experts replayed, their replies
reduced to the extracted number). The pool:

    gemma-2-2b-it                     the controller's own model (self-hosted: free; a call
                                      to it is not an expert call, as in corl-graph eval)
    Meta-Llama-3.1-8B-Instruct        cheap expert
    gpt-4o-mini-2024-07-18            mid expert
    Meta-Llama-3.1-405B-Instruct@...  strong expert (priced far above every target)

Three tiers, each with a hard cap (enforced by the ledger) and a mean-spend target
(the constraint RL must meet). The targets sit where mixing choices is optimal: low and
medium between the free own model and the cheap expert, high near the mid expert.

Per seed:
1. warm start (supervised, tier-aware; one shared by all seeds unless
   ``--no-shared-warm-start``): training's ``warm_start_examples`` with one teacher per
   tier (``tier_teacher``: the most accurate mix of at most two pool models whose expected
   spend on TRAIN meets the tier's target), one teacher run per (train query, tier): a call
   with the short sub-query ``solve the query`` to the drawn model, then ``<aggregate/>``;
   then ``sft_warm_start`` (TRL's SFTTrainer, loss on controller tokens only);
2. evaluation through the real graph (``route_queries``, replayed experts, in-memory
   ledger) on the TEST split, every tier, sampling at the training temperature (1.0: a
   tier that mixes two models does so by sampling);
3. PPO-Lagrangian: reward = correct - format penalty, shaped by ``lambda_tier * cost /
   target_tier``, one multiplier per tier by dual ascent after every iteration, each
   starting at its teacher's dual price (``--lagrange-init teacher``: the multiplier at
   which the teacher's mix is a stationary point of the shaped reward);
4. the same evaluation after RL. With ``--heldout-frac F`` a fixed share F of the TRAIN
   queries is held out of the warm start and of RL; the policy is evaluated on it every
   ``--select-every`` iterations and the iteration with the best held-out reward (0 = the
   warm start) is the one evaluated on test as "rl" (``selection`` in the JSON says which,
   and whether RL beat the warm start there). ``--target-margin`` and ``--whiten-by-tier``
   pass PPOConfig's options of the same names.

Writes benchmarks/results/rl_tiers.json (``rows``: seed, phase, tier, split, accuracy,
mean_cost_usd, target_usd, expert_call_ratio, format_error_rate, reward, where reward =
accuracy - max(0, mean_cost_usd / target_usd - 1)), the training history per seed, the
targets' verdicts, and one learning-curve PNG per tier (rl_tiers_<tier>.png). Not a timed
test; the one long run of the benchmarks (run_all.py names it):

    nice -n 10 python benchmarks/rl_tiers.py                 # 3 seeds
    python benchmarks/rl_tiers.py --seeds 0 --iterations 2 --episodes 12 --minibatch 12 \
        --eval-queries 60                                     # smoke
    python benchmarks/rl_tiers.py --warm-from /tmp/corl_rl_tiers/warm-0   # reuse a warm start
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from corl_graph.training import (
    ExpertStats,
    HFPolicy,
    PPOConfig,
    PPOTrainer,
    RewardConfig,
    TierMultipliers,
    TierTeacher,
    load_queries,
    reward_from_config,
    sft_warm_start,
    target_penalty,
    tier_teacher,
    tiny_llama,
    tiny_tokenizer,
    warm_start_examples,
)

from corl_graph.budget import BudgetTier, TierSet
from corl_graph.evaluation import route_queries, summarize
from corl_graph.experts import OutcomeTable, PriceSheet, ReplayExpert
from corl_graph.protocol import render_system_prompt
from corl_graph.trajectories import Label

TABLE = str(
    Path(__file__).resolve().parents[2] / "shared" / "data" / "outcomes" / "zeroeval_gsm8k.jsonl.gz"
)
OWN = "gemma-2-2b-it"
# name -> max_output_tokens (caps the worst-case reservation)
POOL = {
    OWN: 400,
    "Meta-Llama-3.1-8B-Instruct": 400,
    "gpt-4o-mini-2024-07-18": 400,
    "Meta-Llama-3.1-405B-Instruct@hyperbolic": 400,
}
TIERS = (
    BudgetTier("low", 1e-3, target_usd_per_query=1.5e-5),
    BudgetTier("medium", 2e-3, target_usd_per_query=4.5e-5),
    BudgetTier("high", 5e-3, target_usd_per_query=1e-4),
)
# The teacher's sub-query: short (the replayed experts answer the query itself), in the
# tokenizer's corpus, so a call fits the generation budget with room to spare.
SUBQUERY = "solve the query"
MAX_NEW_TOKENS = 16
OUT = Path(__file__).parent / "results"
HELDOUT_SEED = 20261203
WORK = Path(tempfile.gettempdir()) / "corl_rl_tiers"  # default of --work


def task_table(path: str) -> OutcomeTable:
    """Questions only; replies reduced to the extracted answer; the own model free."""
    table = OutcomeTable.load(path)
    rows = []
    for qid, q in table.queries.items():
        question = load_question(q.prompt or "")
        for m in POOL:
            o = table.outcome(qid, m)
            own = m == OWN
            rows.append(
                dict(
                    query_id=qid,
                    split=q.split,
                    task=q.task,
                    prompt=question,
                    reference=q.reference,
                    model=m,
                    correct=o.correct,
                    answer=o.answer,
                    response=None,
                    input_tokens=o.input_tokens,
                    output_tokens=o.output_tokens,
                    cost_usd=0.0 if own else o.cost_usd,
                )
            )
    prices = {m: table.prices[m] for m in POOL}
    prices[OWN] = PriceSheet(0.0, 0.0)
    return OutcomeTable.from_rows(rows, prices=prices, name="gsm8k_rl_tiers")


def load_question(prompt: str) -> str:
    import re

    m = re.search(r"##\s*Question:\s*(.*?)\s*(?:##\s*Instruction|\Z)", prompt, re.DOTALL)
    return m.group(1).strip() if m else prompt


def train_stats(table: OutcomeTable) -> dict[str, ExpertStats]:
    """Each pool model's mean cost per call and accuracy on the TRAIN split (own model free)."""
    ids = [q for q, info in table.queries.items() if info.split == "train"]
    out = {}
    for m in POOL:
        outcomes = [table.outcome(q, m) for q in ids]
        out[m] = ExpertStats(
            mean_cost_usd=statistics.fmean(o.cost_usd for o in outcomes),
            accuracy=statistics.fmean(float(o.correct) for o in outcomes),
        )
    return out


def teachers(table: OutcomeTable) -> dict[str, TierTeacher]:
    """Per tier, the most accurate tier-only mixture of pool models whose expected spend on
    TRAIN meets the tier's target (``tier_teacher``)."""
    stats = train_stats(table)
    return {t.name: tier_teacher(stats, t.target_usd) for t in TIERS}


def evaluate(
    lm,
    tok,
    table,
    experts,
    query_ids,
    seed: int,
    phase: str,
    split: str = "test",
    quiet: bool = False,
) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Every tier on ``query_ids`` (the test queries, or held-out TRAIN queries for
    checkpoint selection) through the real graph; one row per tier."""
    tiers = TierSet(TIERS)
    rows = []
    for i, tier in enumerate(TIERS):
        policy = HFPolicy(
            lm, tok, name=phase, max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, seed=seed * 100 + i
        )
        outcomes = asyncio.run(
            route_queries(
                table, experts, policy, tiers, tier.name, query_ids=query_ids, controller=OWN
            )
        )
        m = summarize(outcomes, policy=phase, tier=tier.name, cap_usd=tier.max_usd_per_query)
        rows.append(
            {
                "seed": seed,
                "phase": phase,
                "tier": tier.name,
                "split": split,
                "queries": m.queries,
                "accuracy": m.accuracy,
                "mean_cost_usd": m.mean_cost_usd,
                "target_usd": tier.target_usd,
                "cap_usd": tier.max_usd_per_query,
                "expert_call_ratio": m.expert_call_ratio,
                "format_error_rate": m.format_error_rate,
                "cap_violations": m.cap_violations,
                "reward": m.accuracy - target_penalty(m.mean_cost_usd, tier.target_usd),
            }
        )
        if quiet:
            continue
        print(
            f"  {phase:10s} {tier.name:6s} acc {m.accuracy:.3f} cost {m.mean_cost_usd:.2e} "
            f"(target {tier.target_usd:.1e}) calls {m.expert_call_ratio:.2f} "
            f"fmt {m.format_error_rate:.3f} reward {rows[-1]['reward']:.3f}",
            flush=True,
        )
    return rows


def heldout_ids(table: OutcomeTable, frac: float) -> set[str]:
    """A fixed ``frac`` of the TRAIN queries (the same for every seed) held out of the warm
    start and of RL, for checkpoint selection; the test split is never used to choose."""
    ids = sorted(q for q, info in table.queries.items() if info.split == "train")
    random.Random(HELDOUT_SEED).shuffle(ids)
    return set(ids[: round(frac * len(ids))])


def setup(table: OutcomeTable) -> tuple[list[ReplayExpert], list[Any], list[str], Any]:
    experts = [ReplayExpert(table, m, max_output_tokens=n) for m, n in POOL.items()]
    queries = load_queries(table, "train")
    test_ids = sorted(q for q, info in table.queries.items() if info.split == "test")
    corpus = [render_system_prompt([e.descriptor for e in experts]), SUBQUERY] * 20 + [
        q.text for q in queries
    ]
    tok = tiny_tokenizer(
        corpus, vocab_size=768, tiers=[t.name for t in TIERS], extra_tokens=list(POOL)
    )
    return experts, queries, test_ids, tok


def warm_model(args: argparse.Namespace, table: OutcomeTable, seed: int) -> dict[str, Any]:
    """The tier-aware supervised warm start (training's ``warm_start_examples`` with
    per-tier teachers, then ``sft_warm_start``), saved to <--work>/warm-<seed>."""
    t0 = time.time()
    torch.manual_seed(seed)
    experts, queries, _, tok = setup(table)
    held = heldout_ids(table, args.heldout_frac)
    queries = [q for q in queries if q.query_id not in held]
    lm = tiny_llama(
        len(tok),
        hidden_size=64,
        num_layers=2,
        intermediate_size=128,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    by_tier = teachers(table)
    examples = warm_start_examples(
        lm,
        tok,
        trajectories=(),
        labels={q.query_id: Label(q.query_id, reference=q.reference) for q in queries},
        experts=experts,
        tiers=TierSet(TIERS),
        reward_fn=reward_from_config(RewardConfig()),
        boundary=False,
        max_new_tokens=MAX_NEW_TOKENS,
        teachers=by_tier,
        queries={q.query_id: q.text for q in queries},
        teacher_subquery=SUBQUERY,
        seed=seed,
    )
    model_dir = Path(args.work) / f"warm-{seed}"
    t_sft = time.time()
    trainer = sft_warm_start(
        lm,
        tok,
        examples,
        model_dir,
        epochs=args.warm_epochs,
        learning_rate=args.warm_lr,
        batch_size=args.warm_batch,
        max_length=1024,
        seed=seed,
        lr_scheduler_type="cosine",
        warmup_steps=10,
        disable_tqdm=True,
    )
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    info = {
        "dir": str(model_dir),
        "examples": len(examples),
        "heldout_frac": args.heldout_frac,
        "steps": trainer.state.global_step,
        "loss": [losses[0], losses[-1]] if losses else None,
        "teachers": {
            name: {
                "shares": dict(t.shares),
                "expected_cost_usd": t.expected_cost_usd,
                "expected_accuracy": t.expected_accuracy,
                "multiplier": t.multiplier,
            }
            for name, t in by_tier.items()
        },
        "seconds_sft": time.time() - t_sft,
        "seconds": time.time() - t0,
    }
    (model_dir / "warm_start.json").write_text(json.dumps(info, indent=1))
    return info


def run_seed(
    args: argparse.Namespace, seed: int, table: OutcomeTable, warm: dict[str, Any]
) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    torch.manual_seed(seed)
    random.seed(seed)
    experts, queries, test_ids, _ = setup(table)
    if args.eval_queries:
        test_ids = test_ids[: args.eval_queries]
    held = heldout_ids(table, args.heldout_frac)
    held_ids = sorted(held)
    queries = [q for q in queries if q.query_id not in held]
    tok = AutoTokenizer.from_pretrained(warm["dir"])
    lm = AutoModelForCausalLM.from_pretrained(warm["dir"], dtype=torch.float32)
    rows = evaluate(lm, tok, table, experts, test_ids, seed, "warm_start")
    t_eval0 = time.time()
    config = PPOConfig(
        model=warm["dir"],
        output_dir=str(Path(args.work) / f"seed{seed}" / "ppo"),
        table=TABLE,
        experts=tuple(POOL),
        tiers=TIERS,
        iterations=args.iterations,
        episodes_per_iter=args.episodes,
        minibatch_size=args.minibatch,
        ppo_epochs=args.ppo_epochs,
        learning_rate=args.lr,
        kl_coef=0.0,
        ent_coef=args.ent_coef,
        max_new_tokens=MAX_NEW_TOKENS,
        max_steps=2,
        max_seq_len=1024,
        reward="corl",
        cost_constraint="lagrange",
        lagrange_lr=args.lagrange_lr,
        lagrange_init=0.0 if args.lagrange_init == "teacher" else float(args.lagrange_init),
        lagrange_max=2.0,
        target_margin=args.target_margin,
        whiten_by_tier=args.whiten_by_tier,
        controller_expert=OWN,
        seed=seed,
        progress=False,
    )
    trainer = PPOTrainer(config, lm=lm, tokenizer=tok, experts=experts, queries=queries)
    if args.lagrange_init == "teacher":  # start at the teacher's stationary point
        trainer.multipliers = TierMultipliers(
            {n: min(t.multiplier, config.lagrange_max) for n, t in teachers(table).items()},
            lr=config.lagrange_lr,
            max_lambda=config.lagrange_max,
        )
    history = []
    selection: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def select() -> None:  # held-out TRAIN reward of the current policy; keep the best
        nonlocal best
        r = evaluate(trainer.plain_lm, tok, table, experts, held_ids, seed, "select", "train", True)
        score = _mean([x["reward"] for x in r])
        selection.append({"iteration": trainer.iteration, "heldout_reward": score, "rows": r})
        print(f"  select it {trainer.iteration:3d} held-out train reward {score:.4f}", flush=True)
        if best is None or score > best[0]:
            state = {k: v.detach().clone() for k, v in trainer.plain_lm.state_dict().items()}
            best = (score, trainer.iteration, state)

    if held_ids:
        select()  # iteration 0: the warm start
    while trainer.iteration < config.iterations:
        m = trainer.step()
        history.append(m)
        if held_ids and (
            trainer.iteration % args.select_every == 0 or trainer.iteration == config.iterations
        ):
            select()
        if trainer.iteration % 5 == 0 or trainer.iteration == config.iterations:
            print(
                f"  it {trainer.iteration:3d} "
                + " ".join(
                    f"{t.name}: c {m.get(f'cost_usd/{t.name}', float('nan')):.1e} "
                    f"l {m.get(f'lagrange/{t.name}', float('nan')):.3f} "
                    f"f {m.get(f'format_error_rate/{t.name}', float('nan')):.2f}"
                    for t in TIERS
                ),
                flush=True,
            )
    t_rl = time.time()
    chosen: dict[str, Any] | None = None
    if best is not None:
        chosen = {
            "iteration": best[1],
            "heldout_reward": best[0],
            "warm_start_heldout_reward": selection[0]["heldout_reward"],
            "rl_beat_warm_start_on_heldout_train": best[1] > 0,
            # 0: the warm start was trained on the held-out queries too (a reused one)
            "warm_start_heldout_frac": warm.get("heldout_frac", 0.0),
            "heldout_queries": len(held_ids),
        }
        if args.eval_last:  # the last iteration on test too (reported, never chosen on)
            last = evaluate(trainer.plain_lm, tok, table, experts, test_ids, seed, "rl_last")
            chosen["last_iteration_test_rows"] = last
        trainer.plain_lm.load_state_dict(best[2])
        print(f"  chosen on held-out train: iteration {best[1]}", flush=True)
    rows += evaluate(trainer.plain_lm, tok, table, experts, test_ids, seed, "rl")
    return {
        "selection": selection,
        "chosen": chosen,
        "seed": seed,
        "warm_start": {k: v for k, v in warm.items() if k != "dir"},
        "rows": rows,
        "history": history,
        "seconds": {
            "eval_warm_start": t_eval0 - t0,
            "rl": t_rl - t_eval0,
            "eval_rl": time.time() - t_rl,
            "total": time.time() - t0,
        },
    }


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def verdicts(rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """The issue's targets, each measured on the test rows averaged over seeds."""

    def avg(phase: str, tier: str, key: str) -> float:
        return _mean([r[key] for r in rows if r["phase"] == phase and r["tier"] == tier])

    names = [t.name for t in TIERS]
    out: dict[str, Any] = {}
    within = {}
    for t in TIERS:
        cost = avg("rl", t.name, "mean_cost_usd")
        within[t.name] = {
            "mean_cost_usd": cost,
            "target_usd": t.target_usd,
            "relative": cost / t.target_usd - 1,
        }
    out["cost_within_25pct_of_target"] = {
        "met": all(abs(v["relative"]) <= 0.25 for v in within.values()),
        "per_tier": within,
    }
    for key in ("mean_cost_usd", "expert_call_ratio"):
        vals = [avg("rl", n, key) for n in names]
        out[f"{key}_strictly_increasing"] = {
            "met": all(a < b for a, b in itertools.pairwise(vals)),
            "values": dict(zip(names, vals, strict=True)),
        }

    def tier_mean_reward(phase: str, seed: int) -> float:
        return _mean([r["reward"] for r in rows if r["phase"] == phase and r["seed"] == seed])

    warm = [tier_mean_reward("warm_start", s) for s in seeds]
    rl = [tier_mean_reward("rl", s) for s in seeds]
    sd = statistics.stdev(rl) if len(rl) > 1 else float("nan")
    out["reward_above_warm_start_by_2sd"] = {
        "met": len(rl) > 1 and _mean(rl) - _mean(warm) > 2 * sd,
        "warm_start_mean": _mean(warm),
        "rl_mean": _mean(rl),
        "rl_sd_over_seeds": sd,
        "warm_start_sd_over_seeds": statistics.stdev(warm) if len(warm) > 1 else float("nan"),
    }
    fmt = _mean([r["format_error_rate"] for r in rows if r["phase"] == "rl"])
    fmt_warm = _mean([r["format_error_rate"] for r in rows if r["phase"] == "warm_start"])
    out["format_errors_below_2pct"] = {
        "met": fmt < 0.02 and fmt_warm < 0.02,
        "rl": fmt,
        "warm_start": fmt_warm,
    }
    return out


def plot(results: list[dict[str, Any]], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for t in TIERS:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for res in results:
            h = res["history"]
            its = range(1, len(h) + 1)
            s = res["seed"]
            axes[0].plot(its, [x.get(f"cost_usd/{t.name}", math.nan) for x in h], label=f"seed {s}")
            axes[1].plot(its, [x.get(f"lagrange/{t.name}", math.nan) for x in h], label=f"seed {s}")
            axes[2].plot(its, [x.get(f"correct/{t.name}", math.nan) for x in h], label=f"seed {s}")
        axes[0].axhline(t.target_usd, color="k", linestyle="--", label="target")
        axes[0].set_yscale("log")
        for ax, title in zip(
            axes, ("mean cost per episode (USD)", "Lagrange multiplier", "accuracy"), strict=True
        ):
            ax.set_title(f"{t.name}: {title}")
            ax.set_xlabel("PPO iteration")
            ax.legend()
        fig.tight_layout()
        path = out_dir / f"rl_tiers_{t.name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path.name)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--episodes", type=int, default=36)
    ap.add_argument("--minibatch", type=int, default=12)
    ap.add_argument("--ppo-epochs", type=int, default=1)
    ap.add_argument("--warm-epochs", type=float, default=4.0)
    ap.add_argument("--warm-lr", type=float, default=3e-3)
    ap.add_argument("--warm-batch", type=int, default=16)
    ap.add_argument(
        "--shared-warm-start",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one warm start (first seed) for every RL seed (default; halves the run time)",
    )
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--ent-coef", type=float, default=0.0)
    ap.add_argument("--lagrange-lr", type=float, default=0.02)
    ap.add_argument(
        "--lagrange-init",
        default="teacher",
        help="a number, or 'teacher': each tier's dual price of its warm-start teacher (on TRAIN)",
    )
    ap.add_argument(
        "--target-margin",
        type=float,
        default=0.0,
        help="train against target * (1 - margin), so noise does not cross the real target",
    )
    ap.add_argument(
        "--whiten-by-tier",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="whiten PPO advantages within each tier's episodes (default: the whole batch)",
    )
    ap.add_argument(
        "--heldout-frac",
        type=float,
        default=0.0,
        help="share of TRAIN queries held out of the warm start and RL; with it, the RL "
        "policy reported is the iteration (0 = the warm start) with the best held-out reward",
    )
    ap.add_argument("--select-every", type=int, default=10, help="held-out evaluation period")
    ap.add_argument(
        "--eval-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --heldout-frac, also evaluate the last iteration on test (reported only)",
    )
    ap.add_argument("--eval-queries", type=int, default=0, help="0: the whole test split")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warm-from", help="a warm-start folder of an earlier run (skips it)")
    ap.add_argument("--work", default=str(WORK), help="folder for checkpoints (warm-<seed>, ...)")
    ap.add_argument(
        "--combine", nargs="+", help="output files of per-seed runs to merge into --out"
    )
    ap.add_argument("--out", default=str(OUT / "rl_tiers.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    table = task_table(TABLE)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.combine:
        results = [res for f in args.combine for res in _load_results(Path(f))]
        commands = [json.loads(Path(f).read_text())["command"] for f in args.combine]
        write(args, results, Path(args.out), t0, commands=commands)
        return
    warm = None
    if args.warm_from:  # a warm start of an earlier (or concurrent) run of this script
        saved = Path(args.warm_from) / "warm_start.json"
        warm = {
            **(json.loads(saved.read_text()) if saved.is_file() else {}),
            "dir": args.warm_from,
            "reused": True,
        }
    elif args.shared_warm_start:
        warm = warm_model(args, table, seeds[0])
    for seed in seeds:
        print(f"== seed {seed}", flush=True)
        results.append(run_seed(args, seed, table, warm or warm_model(args, table, seed)))
        payload = write(args, results, out, t0)
    print(json.dumps(payload["targets"], indent=1))
    print(f"total {time.time() - t0:.0f} s")


def _load_results(path: Path) -> list[dict[str, Any]]:
    """The per-seed results of an earlier output file (rows put back with their seed)."""
    data = json.loads(path.read_text())
    out = []
    for res in data["per_seed"]:
        rows = [r for r in data["rows"] if r["seed"] == res["seed"]]
        out.append({**res, "rows": rows})
    return out


def write(
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    out: Path,
    t0: float,
    *,
    commands: list[str] | None = None,
) -> dict[str, Any]:
    """Rows, verdicts, histories and plots of ``results`` to ``out`` (after every seed)."""
    rows = [r for res in results for r in res["rows"]]
    done = [res["seed"] for res in results]
    payload = {
        "command": commands
        or "python benchmarks/rl_tiers.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "pool": {m: {"max_output_tokens": n, "own_model": m == OWN} for m, n in POOL.items()},
        "tiers": {
            t.name: {"cap_usd": t.max_usd_per_query, "target_usd": t.target_usd} for t in TIERS
        },
        "reward_train": "correct - format penalty, shaped: - lambda_tier * cost / target_tier",
        "reward_eval": "accuracy - max(0, mean_cost_usd / target_usd - 1)",
        "eval": "test split through route_queries (real graph, replayed experts), "
        "sampling at temperature 1 (the trained stochastic policy)",
        "rows": rows,
        "targets": verdicts(rows, done),
        "selection": {
            str(res["seed"]): {k: v for k, v in res["chosen"].items() if "rows" not in k}
            for res in results
            if res.get("chosen")
        },
        "seconds_total": time.time() - t0,
        "per_seed": [{k: v for k, v in res.items() if k != "rows"} for res in results],
    }
    payload["plots"] = plot(results, out.parent)
    out.write_text(json.dumps(payload, indent=1))
    return payload


if __name__ == "__main__":
    main()
