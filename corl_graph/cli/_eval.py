"""``corl-graph eval``: the replay benchmark on any table in the canonical format, with the
neural policy (``--policy``) and LLM controllers (``--controller-checkpoint``: a
``save_pretrained`` folder run in process; ``--controller-url`` + ``--controller-model``: an
OpenAI-compatible server such as vLLM) as rows beside the baselines."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corl_graph._exceptions import ConfigError

if TYPE_CHECKING:
    from corl_graph.evaluation import ControllerSpec

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="replay benchmark: baselines and a neural policy per tier, JSON + Pareto plot",
        description="Route a table's test split through the graph with replayed experts, per "
        "tier, for every single model, the controller alone, random at matched cost, the "
        "oracle, kNN and threshold routers and (with --policy) a trained neural policy.",
    )
    p.add_argument("table", help="outcome table NAME.jsonl.gz (NAME.models.json beside it)")
    p.add_argument(
        "--policy",
        help="a router folder written by corl-graph fit (its pool, controller and tiers are "
        "the defaults), or NeuralPolicy weights (path without .npz/.json)",
    )
    p.add_argument("--seed", type=int, default=0, help="the baselines' folds and weights")
    add_pool_arguments(p)
    p.add_argument("--embeddings", help="precomputed embeddings .npz (else computed, cached)")
    p.add_argument("--out", default="eval_results", help="folder for JSON and PNG")
    p.add_argument("--limit", type=int, help="only the first N test queries")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--no-sweeps", action="store_true", help="skip the AIQ sweeps")
    p.add_argument(
        "--simulate",
        action="store_true",
        help="every row replayed on the recorded numbers, none through the graph (fast; "
        "no controller-only, threshold, cascade or random rows)",
    )
    llm = p.add_argument_group("LLM controllers (repeatable; LABEL= names the row)")
    llm.add_argument(
        "--controller-checkpoint",
        action="append",
        default=[],
        metavar="[LABEL=]DIR",
        help="save_pretrained folder (e.g. OUTPUT_DIR/final of corl-graph train), run in "
        "process (needs the training extra)",
    )
    llm.add_argument(
        "--controller-url",
        action="append",
        default=[],
        metavar="[LABEL=]URL",
        help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1 (vLLM)",
    )
    llm.add_argument(
        "--controller-model",
        action="append",
        default=[],
        metavar="NAME",
        help="served model name, one per --controller-url (or one URL, several models)",
    )
    llm.add_argument("--controller-api-key-env", help="environment variable of the server's key")
    llm.add_argument("--controller-temperature", type=float, default=0.0, help="0: greedy")
    llm.add_argument("--controller-max-tokens", type=int, default=64, help="per controller turn")
    llm.add_argument(
        "--controller-batch",
        type=int,
        default=8,
        help="in-process checkpoints: queries routed (and decisions batched) at once",
    )


def add_pool_arguments(p: Any) -> None:
    """--pool, --controller, --tiers (alias --caps), --preset, --max-output-tokens."""
    p.add_argument("--pool", help="comma-separated models (default: every model of the table)")
    p.add_argument(
        "--controller", help="the controller model (default: the pool's cheapest on train)"
    )
    p.add_argument(
        "--tiers",
        "--caps",
        dest="tiers",
        metavar="NAME=CAP[:TARGET],...",
        help="tiers in dollars per query, e.g. low=0.001:0.0004,medium=0.01,high=0.05 "
        "(default: derived from the single models' costs, see docs/evaluation.md)",
    )
    p.add_argument(
        "--preset",
        action="store_true",
        help="start from the table's preset pool, controller and tiers (visible tables only)",
    )
    p.add_argument(
        "--max-output-tokens", type=int, help="cap every expert's replies (default: recorded)"
    )


def pool_setup(args: argparse.Namespace, table: Any) -> Any:
    """The ``PoolSetup`` the arguments describe."""
    from corl_graph.evaluation import resolve_pool

    if args.max_output_tokens is not None and args.max_output_tokens < 1:
        raise ConfigError("--max-output-tokens must be >= 1")
    pool = [m.strip() for m in args.pool.split(",") if m.strip()] if args.pool else None
    return resolve_pool(
        table,
        pool=pool,
        controller=args.controller,
        tiers=args.tiers,
        preset=args.preset,
        max_output_tokens=args.max_output_tokens,
    )


def _setup(args: argparse.Namespace) -> tuple[Any, ...]:
    from corl_graph.experts import OutcomeTable

    table = OutcomeTable.load(args.table)
    setup = pool_setup(args, table)
    return table, setup.experts, setup.tiers, setup.controller


def _router_defaults(args: argparse.Namespace, router: Any) -> None:
    """A fitted router's pool, controller and tiers, where the command line names none."""
    notes = router.spec.notes
    if args.pool is None and not args.preset and notes.get("pool"):
        args.pool = ",".join(notes["pool"])
    if args.controller is None and router.spec.controller:
        args.controller = router.spec.controller
    if args.tiers is None and not args.preset:
        targets = notes.get("tier_targets_usd", {})
        args.tiers = ",".join(
            f"{t}={cap!r}" + (f":{targets[t]!r}" if targets.get(t) else "")
            for t, cap in router.spec.tier_caps_usd.items()
        )
    if args.max_output_tokens is None:
        args.max_output_tokens = notes.get("max_output_tokens")


def run(args: argparse.Namespace) -> int:
    from corl_graph.evaluation import run_benchmark, table_embeddings, write_plot
    from corl_graph.policies import CascadeRouter, NeuralPolicy

    neural: Any = None
    if args.policy and CascadeRouter.is_router(args.policy):
        neural = CascadeRouter.load(args.policy)
        _router_defaults(args, neural)
    elif args.policy:
        neural = NeuralPolicy.load(args.policy)
    table, experts, tiers, controller = _setup(args)
    llms = controllers(args)
    emb = table_embeddings(table, path=args.embeddings)
    res = asyncio.run(
        run_benchmark(
            table,
            experts,
            tiers,
            controller,
            emb,
            neural,
            concurrency=args.concurrency,
            limit=args.limit,
            sweeps=not args.no_sweeps,
            controllers=llms,
            seed=args.seed,
            graph=not args.simulate,
            on_step=lambda name: print(f"  {name}", file=sys.stderr, flush=True),
        )
    )
    out = Path(args.out)
    res.save(out / f"replay_{table.name}.json")
    write_plot(res, out / f"replay_{table.name}.png")
    print(format_rows(res.rows, roles=("single", "tier")))
    print("AIQ: " + ", ".join(f"{k} {v:.3f}" for k, v in res.aiq.items()))
    if res.gap_closed is not None:
        print(f"gap_closed (neural - max(single, knn)) / (oracle - max): {res.gap_closed:.3f}")
    for family, figs in res.routing_vs_2models.items():
        print(f"{family}: " + ", ".join(f"{k} {v:.3f}" for k, v in figs.items()))
    print(f"wrote {out}/replay_{table.name}.json and .png ({res.seconds:.0f}s)")
    return 0


def checkpoint_controller(
    path: str | Path,
    *,
    label: str | None = None,
    temperature: float = 0.0,
    max_new_tokens: int = 64,
    batch: int = 8,
) -> ControllerSpec:
    """A ``save_pretrained`` folder run in process with ``HFPolicy`` (imports torch).
    ``batch`` queries are routed at once; their decisions are sampled as one batch, which is
    what keeps a CPU busy without thrashing (64 concurrent contexts would only add padding)."""
    from corl_graph.evaluation import ControllerSpec

    try:
        from corl_graph.training import HFPolicy
    except ImportError as exc:
        raise ConfigError(
            "evaluating a checkpoint needs the training extra: pip install 'corl-graph[training]'"
        ) from exc
    name = label or _label(Path(path))
    policy = HFPolicy.from_pretrained(
        path, name=name, temperature=temperature, max_new_tokens=max_new_tokens, max_batch=batch
    )
    return ControllerSpec(name, policy, concurrency=batch)


def _label(path: Path) -> str:
    # OUTPUT_DIR/final says little on its own; keep the run's folder name with it
    parts = path.resolve().parts
    return (
        "/".join(parts[-2:])
        if path.name in ("final", "") or path.name.startswith("checkpoint-")
        else path.name
    )


def _labelled(value: str) -> tuple[str | None, str]:
    # "trained=runs/ppo/final" -> ("trained", path); a URL's "://" is not a label
    label, sep, rest = value.partition("=")
    if sep and label and "/" not in label and ":" not in label:
        return label, rest
    return None, value


def controllers(args: argparse.Namespace) -> list[Any]:
    """The ``ControllerSpec`` of every --controller-checkpoint and --controller-url."""
    from corl_graph.evaluation import endpoint_controller

    if args.controller_batch < 1 or args.controller_max_tokens < 1:
        raise ConfigError("--controller-batch and --controller-max-tokens must be >= 1")
    urls, models = args.controller_url, args.controller_model
    if bool(urls) != bool(models):
        raise ConfigError("--controller-url and --controller-model go together")
    if len(urls) > 1 and len(models) > 1 and len(urls) != len(models):
        raise ConfigError(
            f"{len(urls)} --controller-url but {len(models)} --controller-model: give one "
            "model per URL, or one URL with several models"
        )
    specs = []
    for value in args.controller_checkpoint:
        label, path = _labelled(value)
        specs.append(
            checkpoint_controller(
                path,
                label=label,
                temperature=args.controller_temperature,
                max_new_tokens=args.controller_max_tokens,
                batch=args.controller_batch,
            )
        )
    for i in range(max(len(urls), len(models))):
        label, url = _labelled(urls[min(i, len(urls) - 1)])
        model = models[min(i, len(models) - 1)]
        specs.append(
            endpoint_controller(
                url,
                model,
                label=label if len(models) <= 1 or len(urls) > 1 else None,
                api_key_env=args.controller_api_key_env,
                temperature=args.controller_temperature,
                max_tokens=args.controller_max_tokens,
            )
        )
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"controller labels must differ, got {labels}: name them LABEL=...")
    return specs


def format_rows(rows: list[dict[str, Any]], roles: tuple[str, ...]) -> str:
    head = (
        f"{'policy':<52} {'tier':<7} {'acc':>6} {'mean $':>9} {'p95 $':>9} "
        f"{'call%':>6} {'calls/q':>7} {'viol':>4} {'fmt%':>5}"
    )
    lines = [head]
    for r in rows:
        if r["role"] in roles:
            lines.append(
                f"{r['policy'][:52]:<52} {r['tier']:<7} {r['accuracy']:>6.3f} "
                f"{r['mean_cost_usd']:>9.2e} {r['p95_cost_usd']:>9.2e} "
                f"{100 * r['expert_call_ratio']:>5.0f}% {r['calls_per_query']:>7.2f} "
                f"{r['cap_violations']:>4} {100 * r.get('format_error_rate', 0.0):>4.0f}%"
            )
    return "\n".join(lines)
