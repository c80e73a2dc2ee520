"""``corl-graph train``: fine-tune the controller on graph runs (``--algo ppo``).

Runs alone or under ``torchrun --nproc_per_node=N --no-python corl-graph train ...`` (FSDP2).
Imports torch only when the command runs, so the rest of the CLI stays light.
"""

from __future__ import annotations

import argparse
from typing import Any

from corl_graph._exceptions import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help="train the controller with PPO on graph runs",
        description="Train the controller (a Hugging Face causal LM with a chat template) "
        "with PPO on runs of the routing graph with replayed experts.",
    )
    p.add_argument(
        "--algo", choices=["ppo", "grpo"], default="ppo", help="ppo (value model) or grpo (TRL)"
    )
    p.add_argument(
        "--num-generations", type=int, default=None, help="grpo: runs per (query, tier) group"
    )
    p.add_argument("--model", required=True, help="save_pretrained folder of the controller")
    p.add_argument("--table", required=True, help="outcome table, e.g. zeroeval_gsm8k.jsonl.gz")
    p.add_argument("--experts", required=True, help="comma-separated models of the table")
    p.add_argument(
        "--tiers",
        default="low=0.002,medium=0.01,high=0.05",
        help="NAME=USD_PER_QUERY,... cheapest first",
    )
    p.add_argument("--output-dir", required=True)
    p.add_argument("--config", help="JSON file of PPOConfig fields (flags override it)")
    for flag, typ in (
        ("iterations", int),
        ("episodes-per-iter", int),
        ("minibatch-size", int),
        ("ppo-epochs", int),
        ("learning-rate", float),
        ("kl-coef", float),
        ("ent-coef", float),
        ("max-new-tokens", int),
        ("max-steps", int),
        ("max-seq-len", int),
        ("max-queries", int),
        ("save-every", int),
        ("seed", int),
        ("reward-alpha", float),
    ):
        p.add_argument(f"--{flag}", type=typ)
    p.add_argument("--reward", choices=["corl", "graded"])
    p.add_argument("--verifier", choices=["exact", "math"])
    p.add_argument("--query-field", choices=["prompt", "question"])
    p.add_argument("--split", choices=["train", "test"])
    p.add_argument("--fsdp", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"])
    p.add_argument("--cpu-offload", action="store_true", default=None)
    p.add_argument("--gradient-checkpointing", action="store_true", default=None)
    p.add_argument("--resume-from", help="a checkpoint folder written by this command")
    p.add_argument(
        "--metrics-file", help="JSON lines of metrics (default OUTPUT_DIR/metrics.jsonl)"
    )
    p.add_argument("--tensorboard", action="store_true", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    return p


def parse_tiers(text: str) -> list[dict[str, Any]]:
    """``"low=0.002,high=0.05"`` -> BudgetTier fields."""
    tiers = []
    for part in text.split(","):
        name, sep, cap = part.strip().partition("=")
        try:
            tiers.append({"name": name, "max_usd_per_query": float(cap)})
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--tiers part {part!r} must look like NAME=USD, e.g. low=0.002")
    return tiers


def build_config(args: argparse.Namespace) -> Any:
    import json

    from corl_graph.training import PPOConfig

    fields: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as fh:
                fields.update(json.load(fh))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--config {args.config!r}: {exc}") from exc
    fields.update(
        model=args.model,
        table=args.table,
        output_dir=args.output_dir,
        experts=[e.strip() for e in args.experts.split(",") if e.strip()],
        tiers=parse_tiers(args.tiers),
        algo=args.algo,
    )
    skip = {"command", "config", "experts", "tiers", "model", "table", "output_dir", "algo"}
    skip.add("num_generations")  # a GRPO option, not a PPOConfig field
    for key, value in vars(args).items():
        if key not in skip and value is not None:
            fields[key] = value
    try:
        return PPOConfig.from_dict(fields)
    except TypeError as exc:
        raise ConfigError(f"bad training config: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    from corl_graph.training import PPOTrainer

    config = build_config(args)
    if config.algo == "grpo":
        from corl_graph.training import train_grpo

        _, final = train_grpo(config, num_generations=args.num_generations or 4)
        print(f"done: GRPO, checkpoint {final}")
        return 0
    trainer = PPOTrainer(config)
    history = trainer.train()
    if trainer.info.is_main and history:
        last = history[-1]
        print(
            f"done: {trainer.iteration} iterations, reward/mean {last.get('reward/mean', 0):.3f}, "
            f"checkpoint {config.output_dir}/final"
        )
    return 0
