"""Rollout throughput of SmolLM2-135M-Instruct as the controller: through a vLLM server
(VLLMPolicy, the way PPO's rollout="vllm" samples) against in-process generation (HFPolicy),
side by side in one run on the same episodes, plus the weight-sync latency (full reload, and
a runtime-loaded LoRA adapter on a second server started with --enable-lora).

An episode is one graph run (GSM8K question, 3 replayed experts, the tier drawn per episode);
tokens/s counts the tokens the controller wrote over the wall time of a rollout of
``--episodes`` concurrent episodes. A warm-up rollout of 2 episodes per backend is not timed
(vLLM's first requests on a CPU build compile and allocate).

    scripts/setup_vllm_venv.sh ~/.cache/corl-graph/vllm-venv      # once
    CORL_VLLM_PYTHON=~/.cache/corl-graph/vllm-venv/bin/python \\
        python benchmarks/bench_vllm_rollout.py [--episodes 8] [--repeats 1] [--no-lora]

Both sides get the same CPU share: vLLM's engine binds one core (its API server keeps the
other), in-process generation runs with one torch thread. Writes
benchmarks/results/vllm_rollout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from _machine import machine
from corl_graph.integrations import vllm_serve_command
from corl_graph.training import HFPolicy, VLLMPolicy, collect, load_queries, make_reward
from corl_graph.training import exact_match as exact
from corl_graph.training.smollm2 import convert_smollm2
from transformers import AutoModelForCausalLM, AutoTokenizer

from corl_graph.budget import BudgetTier, TierSet
from corl_graph.experts import OutcomeTable, ReplayExpert
from corl_graph.graph import Router, RouterConfig

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT.parent / "shared" / "data" / "outcomes" / "zeroeval_gsm8k.jsonl.gz"
OUT = ROOT / "benchmarks" / "results" / "vllm_rollout.json"
POOL = ("gemma-2-2b-it", "gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06")
TIERS = TierSet([BudgetTier("low", 0.0008), BudgetTier("medium", 0.006), BudgetTier("high", 0.02)])
VLLM_PYTHON = os.environ.get("CORL_VLLM_PYTHON")


def _serve(model: Path, port: int, log: Path, extra: list[str], env: dict[str, str]) -> Any:
    cmd = vllm_serve_command(
        str(model), python=VLLM_PYTHON or "python", port=port, dtype="float32", max_model_len=2048
    )
    full_env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_SERVER_DEV_MODE": "1",
        **env,
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen([*cmd, *extra], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env=full_env)  # fmt: skip
    while True:
        if proc.poll() is not None:
            raise SystemExit("vLLM exited:\n" + log.read_text()[-3000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        if time.perf_counter() - t0 > 600:
            proc.kill()
            raise SystemExit("vLLM did not start in 600 s:\n" + log.read_text()[-3000:])
        time.sleep(1)


def _stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def rollouts(policy: HFPolicy, table: OutcomeTable, episodes: int, repeats: int) -> dict[str, Any]:
    """``repeats`` timed rollouts of ``episodes`` concurrent graph runs (after one warm-up)."""
    experts = [ReplayExpert(table, m, max_output_tokens=512) for m in POOL]
    router = Router(RouterConfig(experts, policy, tiers=TIERS, max_steps=2, default_tier="low"))
    queries = load_queries(table, "train", field="question")
    rng = random.Random(0)
    reward = make_reward(exact)
    runs = []
    for i in range(repeats + 1):  # run 0: a short warm-up (2 episodes), not timed
        picks = [rng.choice(queries) for _ in range(episodes if i else 2)]
        t0 = time.perf_counter()
        eps = asyncio.run(collect(router, picks, TIERS, reward, rng))
        wall = time.perf_counter() - t0
        if isinstance(policy, VLLMPolicy):
            policy.raise_failure()
        turns = [s for e in eps for s in e.trajectory.segments if s.kind == "controller"]
        tokens = sum(len(s.token_ids) for s in turns)
        row = {"wall_s": wall, "controller_tokens": tokens, "turns": len(turns),
               "tokens_per_s": tokens / wall, "episodes_per_s": episodes / wall,
               "episodes_with_format_errors": sum(1 for e in eps if e.trajectory.format_errors),
               "mean_reward": sum(e.reward.reward for e in eps) / len(eps)}  # fmt: skip
        print(f"  {'warm-up' if i == 0 else f'run {i}'}: {tokens} tokens in {wall:.1f}s "
              f"= {tokens / wall:.1f} tokens/s", flush=True)  # fmt: skip
        if i:
            runs.append(row)
    tok = sum(r["controller_tokens"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    return {"runs": runs, "tokens_per_s": tok / wall, "episodes_per_s": episodes * repeats / wall}


def _syncs(policy: VLLMPolicy, n: int) -> dict[str, Any]:
    rows = []
    for _ in range(n):
        policy.sync_weights()
        rows.append(dict(policy.last_sync))
    mean = {k: sum(r[k] for r in rows) / n for k in rows[0]}
    print(f"  sync ({policy.sync_mode}): {mean}", flush=True)
    return {"mode": policy.sync_mode, "runs": rows, "mean": mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="SmolLM2 save_pretrained folder (default: convert once)")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--syncs", type=int, default=3)
    ap.add_argument("--no-lora", action="store_true", help="skip the LoRA server")
    ap.add_argument("--port", type=int, default=8731)
    ap.add_argument("--work", default="/tmp/corl-bench-vllm-rollout")
    args = ap.parse_args()
    if not VLLM_PYTHON:
        raise SystemExit("set CORL_VLLM_PYTHON to a vllm-cpu venv (scripts/setup_vllm_venv.sh)")
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else convert_smollm2()
    table = OutcomeTable.load(TABLE)
    tok = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    kw: dict[str, Any] = dict(max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)
    results: dict[str, Any] = {
        "benchmark": "vllm_rollout",
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized, float32)",
        "task": f"zeroeval_gsm8k train questions, experts {list(POOL)}, tiers "
        f"{[(n, TIERS[n].max_usd_per_query) for n in TIERS]}, max_steps 2",
        "episodes_per_rollout": args.episodes,
        "timed_rollouts": args.repeats,
        "max_new_tokens": args.max_new_tokens,
        "threads": "vLLM engine bound to 1 core (API server on the other); in process: 1 torch "
        "thread",
        "machine_before": machine(),
        "command": "python benchmarks/bench_vllm_rollout.py " + " ".join(sys.argv[1:]),
    }

    def save() -> None:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2))

    print("in process (HFPolicy):", flush=True)
    results["in_process"] = rollouts(HFPolicy(lm, tok, **kw), table, args.episodes, args.repeats)
    save()

    print("vLLM (VLLMPolicy), full-weight reload:", flush=True)
    proc, start_s = _serve(model, args.port, work / "vllm.log", [], {})
    try:
        url = f"http://127.0.0.1:{args.port}/v1"
        policy = VLLMPolicy(lm, tok, base_url=url, sync_dir=work / "weights", **kw)
        policy.check()
        results["vllm"] = {"server_start_s": start_s}
        results["vllm"]["reload_sync"] = _syncs(policy, args.syncs)
        results["vllm"].update(rollouts(policy, table, args.episodes, args.repeats))
    finally:
        _stop(proc)
    results["speedup_vllm_over_in_process"] = (
        results["vllm"]["tokens_per_s"] / results["in_process"]["tokens_per_s"]
    )
    save()

    if not args.no_lora:
        from peft import LoraConfig, get_peft_model

        print("vLLM with --enable-lora, runtime-loaded adapter (rank 8, q/v):", flush=True)
        extra = ["--enable-lora", "--max-lora-rank", "8", "--max-loras", "1"]
        env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        proc, start_s = _serve(model, args.port, work / "vllm-lora.log", extra, env)
        try:
            peft_lm = get_peft_model(lm, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
            policy = VLLMPolicy(
                peft_lm,  # type: ignore[arg-type]
                tok,
                base_url=f"http://127.0.0.1:{args.port}/v1",
                sync_dir=work / "adapter",
                sync_mode="lora",
                **kw,
            )
            policy.check()
            lora: dict[str, Any] = {"server_start_s": start_s, "lora_sync": _syncs(policy, 3)}
            lora.update(rollouts(policy, table, args.episodes, 1))  # one timed rollout
            results["vllm_lora"] = lora
        finally:
            _stop(proc)
    results["machine_after"] = machine()
    save()
    print(json.dumps({k: results[k] for k in results if k.startswith("speedup")}, indent=2))


if __name__ == "__main__":
    main()
