"""The ``corl-graph`` command. Each subcommand lives in its own module with
``add_parser(subparsers)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from corl_graph._exceptions import CorlError

__all__ = ["main"]

# name -> module; modules are imported lazily so `corl-graph demo` never imports torch.
_COMMANDS = {
    "demo": "corl_graph.cli._demo",
    "eval": "corl_graph.cli._eval",
    "fit": "corl_graph.cli._fit",
    "report": "corl_graph.cli._report",
    "train": "corl_graph.cli._train",
    "traces": "corl_graph.cli._traces",
    "serve": "corl_graph.cli._serve",
}


def _parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corl-graph",
        description="Budget-aware expert routing for LangChain / LangGraph.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in _COMMANDS.items():
        if selected is not None and name != selected:
            sub.add_parser(name, help=f"see corl-graph {name} --help")
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    selected = args_list[0] if args_list and args_list[0] in _COMMANDS else None
    parser = _parser(selected)
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(_COMMANDS[args.command])
    try:
        code: int = module.run(args)
    except CorlError as exc:
        print(f"corl-graph {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
