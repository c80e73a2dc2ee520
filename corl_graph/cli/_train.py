"""``corl-graph train``: fine-tune the controller on graph runs (``--algo ppo|grpo|sft``).

The task is an outcome table (``--table T --experts A,B``) or a folder of prepared traces
(``--traces DIR``, from ``corl-graph traces prepare``): cached experts, whose misses are
failed calls (``--on-miss unavailable``) or live calls to the experts of a serve config
(``--on-miss live --live-experts CONFIG``) within ``--training-budget-usd`` on ``--ledger``.
``--algo sft`` is the warm start on the traces; its ``OUTPUT_DIR/final`` is the next
``--model``.

Runs alone or under ``torchrun --nproc_per_node=N --no-python corl-graph train ...`` (FSDP2).
Imports torch only when the command runs, so the rest of the CLI stays light.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from corl_graph._exceptions import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help="train the controller (PPO, GRPO, SFT warm start) on graph runs",
        description="Train the controller (a Hugging Face causal LM with a chat template) "
        "on runs of the routing graph, with experts replayed from an outcome table (--table) "
        "or from your own prepared traces (--traces).",
    )
    p.add_argument(
        "--algo",
        choices=["ppo", "grpo", "sft"],
        default=None,
        help="ppo (value model, the default), grpo (TRL) or sft (warm start on --traces)",
    )
    p.add_argument(
        "--num-generations",
        type=int,
        default=None,
        help="grpo: runs per (query, tier) group (default 4)",
    )
    p.add_argument("--model", required=True, help="save_pretrained folder of the controller")
    p.add_argument("--table", help="outcome table, e.g. zeroeval_gsm8k.jsonl.gz")
    p.add_argument("--traces", help="folder written by corl-graph traces prepare")
    p.add_argument(
        "--experts", help="comma-separated experts (required with --table; default: all cached)"
    )
    p.add_argument(
        "--tiers",
        help=f"NAME=CAP[:TARGET],... cheapest first: the per-query cap in USD and, for "
        f"--cost-constraint lagrange, the mean spend per query to aim at (default: the "
        f"--live-experts config's tiers, else {_default_tiers()})",
    )
    p.add_argument(
        "--cost-constraint",
        choices=["none", "lagrange"],
        help="lagrange: maximise the reward subject to mean cost <= each tier's TARGET "
        "(one multiplier per tier, dual ascent every iteration); none (default): caps only",
    )
    p.add_argument(
        "--controller-expert",
        help="the expert that is the controller's own model: its calls are not expert calls",
    )
    traces = p.add_argument_group("training on prepared traces (--traces)")
    traces.add_argument(
        "--on-miss",
        choices=["unavailable", "live"],
        help="a sub-query not in the cache: a failed call (default) or a live call",
    )
    traces.add_argument(
        "--live-experts",
        "--experts-config",
        dest="live_experts",
        help="serve config (.json/.toml) with the real experts: called on a miss with "
        "--on-miss live; their price sheets are used in any case",
    )
    traces.add_argument(
        "--training-budget-usd", type=float, help="--on-miss live: the most live calls may spend"
    )
    traces.add_argument(
        "--ledger", dest="ledger_url", help="ledger of the training budget (default memory://)"
    )
    traces.add_argument("--cache-match", choices=["query", "subquery"])
    traces.add_argument("--sft-epochs", type=float)
    traces.add_argument("--sft-min-reward", type=float)
    traces.add_argument(
        "--sft-boundary",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the always-cheapest / always-strongest boundary runs (default on)",
    )
    p.add_argument("--output-dir", required=True)
    p.add_argument(
        "--config",
        help="JSON file of training config fields (flags override it; fields of another "
        "--algo's config are skipped, so one file serves sft then ppo)",
    )
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
        ("format-penalty", float),
        ("temperature", float),
        ("lagrange-lr", float),
        ("lagrange-init", float),
        ("lagrange-max", float),
        ("target-margin", float),
    ):
        p.add_argument(f"--{flag}", type=typ)
    vllm = p.add_argument_group("rollouts on a vLLM server (--algo ppo)")
    vllm.add_argument(
        "--rollout",
        choices=["local", "vllm"],
        help="where the controller's turns are sampled: in process (default) or by the vLLM "
        "server at --vllm-url, the trainer's weights reloaded into it after each update",
    )
    vllm.add_argument(
        "--vllm-url",
        help="the server's URL, e.g. http://127.0.0.1:8000/v1 (started on --model with "
        "VLLM_SERVER_DEV_MODE=1)",
    )
    vllm.add_argument("--vllm-model", help="its served model name (default: the first it lists)")
    vllm.add_argument("--vllm-timeout-s", type=float, help="per request (default 300)")
    vllm.add_argument(
        "--vllm-sync-dir",
        help="where weights are written for the server to load (default OUTPUT_DIR/vllm_weights)",
    )
    p.add_argument(
        "--whiten-by-tier",
        action="store_true",
        default=None,
        help="PPO: whiten advantages within each tier's episodes (default: the whole batch)",
    )
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


def _default_tiers() -> str:
    """The training configs' default tiers (the budget package's), as a --tiers string."""
    from corl_graph.budget import default_tiers

    return ",".join(f"{t.name}={t.max_usd_per_query}" for t in default_tiers().values())


def parse_tiers(text: str) -> list[dict[str, Any]]:
    """``"low=0.002:0.0005,high=0.05"`` -> BudgetTier fields (cap, optional target)."""
    tiers = []
    for part in text.split(","):
        name, sep, spec = part.strip().partition("=")
        cap, colon, target = spec.partition(":")
        try:
            tier: dict[str, Any] = {"name": name, "max_usd_per_query": float(cap)}
            if colon:
                tier["target_usd_per_query"] = float(target)
            tiers.append(tier)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ConfigError(
                f"--tiers part {part!r} must look like NAME=USD or NAME=USD:TARGET_USD "
                "(cap, then mean-spend target), e.g. low=0.002:0.0005"
            )
    return tiers


def _check_model(model: str) -> None:
    """A --model that is neither a folder nor a hub id fails in one line, before torch."""
    import re
    from pathlib import Path

    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"--model {model!r} has no config.json: give a save_pretrained folder "
                "(e.g. OUTPUT_DIR/final of an earlier corl-graph train)"
            )
        return
    hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", model) and not model.startswith((".", "/", "~"))
    if not hub_id:
        raise ConfigError(
            f"--model {model!r}: no such folder (give a save_pretrained folder, e.g. "
            "OUTPUT_DIR/final of corl-graph train --algo sft, or a Hugging Face hub id)"
        )


def _check_flags(args: argparse.Namespace) -> None:
    """What only the command line knows: the serve config it reads for live experts. Every
    rule of the fields themselves is the training config's (PPOConfig, GRPOConfig,
    SFTConfig), checked when it is built."""
    if args.traces and args.on_miss == "live" and not args.live_experts:
        raise ConfigError(
            "--on-miss live needs --live-experts CONFIG (a serve config with the real experts) "
            "and --training-budget-usd X"
        )


# Fields of a --config file that decide the task: a flag left out takes the file's value
# before the combination is checked, so a file alone can name the table or the traces.
_TASK_FIELDS = (
    "table",
    "traces",
    "on_miss",
    "live_experts",
    "training_budget_usd",
    "ledger_url",
    "cache_match",
)


def _with_config_file(args: argparse.Namespace) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The flags with the --config file's task fields filled in (flags win), and the file."""
    import json

    file_fields: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as fh:
                loaded = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--config {args.config!r}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {args.config!r} must hold a JSON object of fields")
        file_fields = loaded
    merged = argparse.Namespace(**vars(args))
    for key in _TASK_FIELDS:
        if getattr(merged, key, None) is None and file_fields.get(key) is not None:
            setattr(merged, key, file_fields[key])
    if merged.experts is None and file_fields.get("experts"):
        experts = file_fields["experts"]
        merged.experts = ",".join(experts) if isinstance(experts, list) else str(experts)
    return merged, file_fields


def build_config(args: argparse.Namespace, *, tiers: str | None = None) -> Any:
    """The --algo's training config from the flags over the --config file; tiers: flag,
    ``tiers`` (the serve config's), file, then the config's default."""
    merged, file_fields = _with_config_file(args)
    _check_flags(merged)
    return _config(args, merged, file_fields, tiers)


# argparse destinations that are not config fields
_NOT_FIELDS = {"command", "config", "func"}


def _config(
    args: argparse.Namespace,
    merged: argparse.Namespace,
    file_fields: dict[str, Any],
    tiers: str | None,
) -> Any:
    """The config of --algo (flag, then file, then "ppo") from its own fields only: a flag
    of another algorithm is an error naming the --algo it belongs to; a file field of
    another algorithm's config is skipped."""
    from corl_graph.training import GRPOConfig, PPOConfig, SFTConfig, config_class

    algo = args.algo or file_fields.get("algo") or "ppo"
    cls = config_class(algo)
    known = PPOConfig.field_names() | GRPOConfig.field_names() | SFTConfig.field_names()
    own = cls.field_names()
    fields: dict[str, Any] = {k: v for k, v in file_fields.items() if k in own or k not in known}
    if args.tiers or tiers:
        fields["tiers"] = parse_tiers(args.tiers or tiers or "")
    fields.update(model=args.model, output_dir=args.output_dir, algo=algo)
    experts = [e.strip() for e in (merged.experts or "").split(",") if e.strip()]
    if experts or "experts" in fields:
        fields["experts"] = experts
    skip = _NOT_FIELDS | {"experts", "tiers", "model", "output_dir", "algo"}
    for key, value in vars(args).items():  # the flags given, not the file's fields
        if key not in skip and value is not None and key not in own:
            owners = [a for a in ("ppo", "grpo", "sft") if key in config_class(a).field_names()]
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"{flag} applies to --algo {' or '.join(owners)} only (this run is --algo {algo})"
            )
    for key, value in vars(merged).items():  # flags over the file's task fields
        if key not in skip and value is not None and key in own:
            fields[key] = value
    try:
        return cls.from_dict(fields)
    except TypeError as exc:
        raise ConfigError(f"bad training config: {exc}") from exc


def _live_experts(path: str) -> tuple[dict[str, Any], str | None]:
    """The serve config's experts by name, and its tiers as a --tiers string."""
    from corl_graph.integrations import ServerConfig

    config = ServerConfig.load(path)
    experts = {e.name: e for e in config.build_experts()}
    tiers = (
        ",".join(
            f"{t.name}={t.max_usd_per_query}"
            + (f":{t.target_usd_per_query}" if t.target_usd_per_query is not None else "")
            for t in config.tiers
        )
        or None
    )
    return experts, tiers


def run(args: argparse.Namespace) -> int:
    live: dict[str, Any] = {}
    config_tiers = None
    merged, file_fields = _with_config_file(args)
    _check_flags(merged)  # before the serve config is read
    if merged.live_experts:
        live, config_tiers = _live_experts(merged.live_experts)
    config = _config(args, merged, file_fields, config_tiers)
    task = None
    if config.traces is not None:
        from corl_graph.training import traces_task

        world = int(os.environ.get("WORLD_SIZE", "1"))
        task = traces_task(config, live=live, world_size=world)
        print(f"traces: {task.prepared.coverage.summary()}")
        print(
            f"traces: {len(task.queries)} queries with a reference, {task.unlabelled} without "
            f"(not trained on); on a cache miss: {config.on_miss}"
        )
    try:
        _check_model(config.model)
        if config.tensorboard:
            from corl_graph.training import require_tensorboard

            require_tensorboard()
        _train(config, task, args)
    finally:
        if task is not None:
            task.close()  # the training-budget ledger's connections and files
    return 0


def _train(config: Any, task: Any, args: argparse.Namespace) -> None:
    injected: dict[str, Any] = (
        {"experts": task.experts, "queries": task.queries} if task is not None else {}
    )
    if config.kind == "sft":
        from corl_graph.training import train_sft

        final = train_sft(config, task=task)
        print(f"done: SFT warm start, checkpoint {final} (continue with --model {final})")
    elif config.kind == "grpo":
        from corl_graph.training import train_grpo

        trainer, final = train_grpo(config, **injected)
        world = trainer.accelerator.num_processes
        how = ""
        if world > 1:  # accelerate shards with FSDP2 on GPUs only; on CPUs it runs DDP
            how = f", {'FSDP2' if trainer.is_fsdp_enabled else 'DDP'} over {world} processes"
        print(f"done: GRPO{how}, checkpoint {final}")
    else:
        from corl_graph.training import PPOTrainer

        trainer = PPOTrainer(config, **injected)
        history = trainer.train()
        if trainer.info.is_main and history:
            last = history[-1]
            print(
                f"done: {trainer.iteration} iterations, reward/mean "
                f"{last.get('reward/mean', 0):.3f}, checkpoint {config.output_dir}/final"
            )
    if task is not None:
        e = task.experts
        print(
            f"cache: {sum(x.hits for x in e)} hits, {sum(x.misses for x in e)} misses "
            f"({sum(x.live_calls for x in e)} live, ${sum(x.live_usd for x in e):.6f}; "
            f"{sum(x.refused for x in e)} refused by the training budget)"
        )
