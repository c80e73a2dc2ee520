"""One update of our PPO and of TRL's GRPOTrainer on the same rollouts and batch: tokens/s
and peak resident memory, for the tiny Llama and the SmolLM2-135M architecture (random
weights). Each (model, algorithm) runs in a fresh process so peaks do not mix; RSS is
sampled from /proc every 5 ms (tracemalloc does not see torch's allocations).

    python benchmarks/bench_grpo_vs_ppo.py   # -> results/grpo_vs_ppo.json

Both updates see the same episodes (rolled out once through the graph with HFPolicy and
replayed to GRPO through its rollout_func), one optimizer pass (ppo_epochs = 1), no KL
reference (kl_coef = 0, so neither holds a second model). PPO adds a value head and its
loss; GRPO recomputes the log-probs itself. tokens/s = sequence tokens / update seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "grpo_vs_ppo.json"
SIZES = {
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128),
    "smollm2-135m-arch": dict(
        hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536
    ),
}
EPISODES = {"tiny": 8, "smollm2-135m-arch": 4}


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRSS:
    """Samples VmRSS in a thread; ``peak`` is the maximum seen while running."""

    def __init__(self) -> None:
        self.peak = self.start = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mib())
            time.sleep(0.005)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _setup(size: str) -> tuple[Any, Any, Any, list[Any], Any]:
    import torch
    from corl_graph.training import PPOConfig, QuerySpec, tiny_llama, tiny_tokenizer

    sys.path.insert(0, str(ROOT / "tests" / "training"))
    from traces_fixtures import TIERS, toy_experts, toy_table

    table = toy_table(8)
    tok = tiny_tokenizer([q.prompt or "" for q in table.queries.values()] * 3, vocab_size=400)
    torch.manual_seed(0)
    vocab = 49152 if size != "tiny" else len(tok)
    lm = tiny_llama(
        vocab, **SIZES[size], pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )
    n = EPISODES[size]
    config = PPOConfig(
        model="unused",
        output_dir=str(ROOT / "build" / "bench_grpo"),
        table="unused",
        experts=("cheap", "strong"),
        tiers=tuple(TIERS.values()),
        iterations=1,
        episodes_per_iter=n,
        minibatch_size=n,
        ppo_epochs=1,
        max_new_tokens=16,
        max_steps=2,
        kl_coef=0.0,
        progress=False,
        algo="ppo",
    )
    queries = [QuerySpec(q, i.prompt or "", i.reference) for q, i in table.queries.items()]
    return config, lm, tok, queries, toy_experts(table)


def _episodes(config: Any, lm: Any, tok: Any, queries: list[Any], experts: Any) -> Any:
    from corl_graph.training import PPOTrainer

    trainer = PPOTrainer(config, lm=lm, tokenizer=tok, experts=experts, queries=queries)
    # Pairs of the same (query, tier): GRPO's groups of 2.
    trainer.rng = random.Random(0)
    picks = [queries[i // 2] for i in range(config.episodes_per_iter)]
    import asyncio

    from corl_graph.training import collect

    class _Fixed(random.Random):
        def choice(self, seq: Any) -> Any:
            return next(iter(seq))  # always the first tier: a group shares its tier

    return trainer, asyncio.run(
        collect(trainer.router, picks, config.tier_set, trainer.reward_fn, _Fixed())
    )


def run_one(size: str, algo: str) -> dict[str, Any]:
    from corl_graph.training import build_batch, split_for_grpo

    config, lm, tok, queries, experts = _setup(size)
    trainer, episodes = _episodes(config, lm, tok, queries, experts)
    tokens = sum(len(e.trajectory.token_ids) for e in episodes)
    if algo == "ppo":
        batch = build_batch(episodes, pad_id=tok.pad_token_id, max_len=4096)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            trainer.update(batch)
            seconds = time.perf_counter() - t0
    else:
        from corl_graph.training import GRPOConfig, make_grpo_trainer

        del trainer
        # the same shared fields as the PPO run (progress=False: no tqdm), groups of 2
        shared = {k: v for k, v in config.to_dict().items() if k in GRPOConfig.field_names()}
        grpo_config = GRPOConfig.from_dict({**shared, "algo": "grpo", "num_generations": 2})
        grpo = make_grpo_trainer(
            grpo_config, lm=lm, tokenizer=tok, experts=experts, queries=queries
        )

        def replay(prompts: list[Any], _: Any) -> dict[str, list[Any]]:
            out: dict[str, list[Any]] = {}
            for e in episodes[: len(prompts)]:
                for k, v in split_for_grpo(e.trajectory).items():
                    out.setdefault(k, []).append(v)
                out.setdefault("corl_reward", []).append(e.reward.reward + random.random())
            return out

        grpo.rollout_func = replay
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            grpo.train()
            seconds = time.perf_counter() - t0
    return {
        "model": size,
        "algo": algo,
        "episodes": len(episodes),
        "tokens": tokens,
        "update_s": seconds,
        "tokens_per_s": tokens / seconds,
        "rss_before_mib": mem.start,
        "rss_peak_mib": mem.peak,
        "rss_peak_increase_mib": mem.peak - mem.start,
    }


_RUN_TIMEOUT_S = 600


def main() -> int:
    if len(sys.argv) == 3 and not sys.argv[1].startswith("-"):
        print(json.dumps(run_one(sys.argv[1], sys.argv[2])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=",".join(SIZES), help=",".join(SIZES))
    args = parser.parse_args()
    env = {**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1", "PYTHONWARNINGS": "ignore"}
    rows: list[dict[str, Any]] = []
    for size in args.models.split(","):
        for algo in ("ppo", "grpo"):
            rows.append(_run(size, algo, env))
            print(rows[-1], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"runs": rows, "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}, indent=2
        )
    )
    return 0


def _run(size: str, algo: str, env: dict[str, str]) -> dict[str, Any]:
    """One update in a fresh process; a timeout or a crash is a row too, not a lost file."""
    try:
        proc = subprocess.run(
            [sys.executable, __file__, size, algo],
            capture_output=True,
            text=True,
            env=env,
            timeout=_RUN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {"model": size, "algo": algo, "error": f"timed out after {_RUN_TIMEOUT_S} s"}
    if proc.returncode:
        return {"model": size, "algo": algo, "error": proc.stderr[-2000:]}
    row: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return row


if __name__ == "__main__":
    raise SystemExit(main())
