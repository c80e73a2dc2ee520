"""Throughput of one PPO update (old/ref log-probs + clipped policy/value losses + AdamW) on
this machine's CPU: a tiny Llama and the SmolLM2-135M architecture (random weights), in 1
process and in 2 FSDP2 processes (gloo).

    python benchmarks/bench_ppo_throughput.py  # -> results/ppo_throughput.json

Tokens/s counts the batch's non-padding tokens once per update (the whole update: reference
and old-policy forward passes, ppo_epochs x forward+backward, optimizer steps).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

MODELS = {
    "tiny": dict(
        vocab_size=1024,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
    ),
    "smollm2-135m-arch": dict(
        vocab_size=49152,
        hidden_size=576,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        intermediate_size=1536,
    ),
}
OUT = Path(__file__).parent / "results" / "ppo_throughput.json"


def worker(model: str, rows: int, length: int, repeats: int, out: str) -> None:
    import torch.distributed as dist
    from corl_graph.training import (
        PPOConfig,
        PPOTrainer,
        QuerySpec,
        RolloutBatch,
        tiny_llama,
        tiny_tokenizer,
    )

    from corl_graph.experts import OutcomeTable, PriceSheet, ReplayExpert

    dims = dict(MODELS[model])
    torch.manual_seed(0)
    lm = tiny_llama(dims.pop("vocab_size"), **dims)  # type: ignore[arg-type]
    tok = tiny_tokenizer(["x y z"], vocab_size=270)
    table = OutcomeTable.from_rows(
        [
            dict(
                query_id="q",
                split="train",
                model="m",
                correct=1.0,
                input_tokens=1,
                output_tokens=1,
                cost_usd=0.0,
                prompt="x",
            )
        ],
        prices={"m": PriceSheet(0.0, 0.0)},
    )
    cfg = PPOConfig(
        model="unused",
        output_dir="unused",
        table="unused",
        experts=("m",),
        episodes_per_iter=rows,
        minibatch_size=rows // 2,
        ppo_epochs=1,
        kl_coef=0.05,
        progress=False,
    )
    trainer = PPOTrainer(
        cfg,
        lm=lm,
        tokenizer=tok,
        experts=[ReplayExpert(table, "m")],
        queries=[QuerySpec("q", "x", "1")],
    )
    g = torch.Generator().manual_seed(1)
    vocab = lm.config.vocab_size
    ids = torch.randint(3, vocab, (rows, length), generator=g)
    action = torch.zeros(rows, length - 1)
    action[:, length // 2 :] = 1.0
    batch = RolloutBatch(
        ids, torch.ones_like(ids), action, torch.rand(rows, generator=g), ["low"] * rows
    )
    rank, world = trainer.info.rank, trainer.info.world_size
    local = batch.rows(torch.arange(rank, rows, world))
    trainer.update(local)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        trainer.update(local)
        times.append(time.perf_counter() - t)
    if rank == 0:
        best = min(times)
        Path(out).write_text(
            json.dumps(
                {
                    "tokens_per_update": rows * length,
                    "seconds_per_update": best,
                    "tokens_per_s": rows * length / best,
                    "all_seconds": times,
                    "params": sum(p.numel() for p in trainer.plain_lm.parameters()),
                }
            )
        )
    if dist.is_initialized():
        dist.destroy_process_group()


def measure(
    model: str, nproc: int, threads: int, rows: int, length: int, repeats: int
) -> dict[str, object]:
    out = Path(f"/tmp/bench_ppo_{model}_{nproc}_{threads}.json")
    script = [
        str(Path(__file__).resolve()),
        "--worker",
        model,
        "--rows",
        str(rows),
        "--length",
        str(length),
        "--repeats",
        str(repeats),
        "--out",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = (
        [sys.executable, *script]
        if nproc == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            *script,
        ]
    )
    subprocess.run(cmd, check=True, env=env, timeout=1800, capture_output=True)
    result: dict[str, object] = json.loads(out.read_text())
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.rows, args.length, args.repeats, args.out)
        return
    results = []
    for model in MODELS:
        # the 135M model gets a smaller batch so that the benchmark fits in minutes on 2 cores
        rows, length = (args.rows, args.length) if model == "tiny" else (4, 128)
        # On a busy 2-core machine, 2 OpenMP threads in one process can be far slower than 1
        # (threads spin while the other core is taken), so 1 process is measured both ways.
        for nproc, threads in ((1, 1), (1, 2), (2, 1)):
            r = measure(model, nproc, threads, rows, length, args.repeats)
            results.append(
                {
                    "model": model,
                    "processes": nproc,
                    "omp_threads_per_process": threads,
                    "rows": rows,
                    "length": length,
                    **r,
                }
            )
            print(model, nproc, threads, f"{r['tokens_per_s']:.0f} tokens/s", flush=True)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "torch": torch.__version__,
                },
                "update": {
                    "ppo_epochs": 1,
                    "minibatches": 2,
                    "kl_to_reference": True,
                    "best_of": args.repeats,
                },
                "command": "python benchmarks/bench_ppo_throughput.py",
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
