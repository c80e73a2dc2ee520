"""Rerun the performance suite and rewrite the README's results table, in one command.

    python benchmarks/run_all.py            # about 11-14 minutes on 2 cores (677 s last time)
    python benchmarks/run_all.py --only overhead,controller --no-readme

Each benchmark is its own script writing ``benchmarks/results/<name>.json`` with the machine
description; this runs them one after another (never in parallel: they would measure each
other) with sizes chosen to fit the budget, then ``summarize.py`` turns the JSON files into
the table between the ``<!-- bench:table -->`` markers of the README. The replay quality
benchmark (bench_replay.py, ~10 min) and the PPO learning check (~9 min) are not performance
figures and are run on their own, as is the one long run, rl_tiers.py (PPO-Lagrangian with
per-tier spend targets, 3 seeds, evaluated on the test split; see docs/training.md). So are the
router's train-only outer CV (router_train_cv.py, about 1-1.5 minutes per table) and the
derived "unseen" tables (bench_unseen.py); see docs/evaluation.md. The vLLM rollout benchmark
(bench_vllm_rollout.py, ~12 min, needs CORL_VLLM_PYTHON) and SmolLM2 PPO through vLLM
rollouts (smollm2_vllm_ppo.py, --minutes long) run on their own too; see docs/training.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SUITE: dict[str, list[str]] = {
    "overhead": ["bench_overhead.py", "--queries", "200", "--rounds", "3"],
    "controller": ["bench_controller.py", "--calls", "300", "--rounds", "3"],
    "scaling": ["bench_scaling.py", "--queries", "150"],
    "tracing": ["bench_tracing.py", "--rounds", "10"],
    "tracing_profile": ["profile_tracing.py", "--queries", "400", "--rounds", "3"],
    "ledger": ["bench_ledger.py", "--seconds", "3"],
    "load_server": [
        "load_server.py",
        "--requests",
        "1500",
        "--concurrency",
        "64",
        "--max-seconds",
        "45",
    ],
    "ppo_throughput": ["bench_ppo_throughput.py"],
    # both models: the SmolLM2-architecture rows take about 3 minutes since GRPO runs in
    # float32 on a CPU (in emulated bf16 one GRPO step did not finish in 10 minutes)
    "grpo_vs_ppo": ["bench_grpo_vs_ppo.py"],
}
_LIMIT_S = 420  # no single benchmark may take more than this (grpo_vs_ppo: 180-270 s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="comma-separated names: " + ",".join(SUITE))
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SUITE)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(SUITE)}")
    failed = []
    started = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            code = subprocess.run(
                [sys.executable, str(HERE / SUITE[name][0]), *SUITE[name][1:]],
                cwd=HERE.parent,
                timeout=_LIMIT_S,
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
        print(f"   {name}: exit {code}, {time.perf_counter() - t:.0f}s", flush=True)
        if code != 0:
            failed.append(name)
    if not args.no_readme:
        subprocess.run([sys.executable, str(HERE / "summarize.py"), "--write-readme"], check=True)
    print(f"total {time.perf_counter() - started:.0f}s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
