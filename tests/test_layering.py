"""Layering: the library (corl_graph/ outside the command line) never imports the training
package or torch, so routing and evaluation run on numpy alone, and training imports the
simulator from ``corl_graph.evaluation`` (one direction, no cycle)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "corl_graph"
FORBIDDEN = ("torch", "corl_graph.training", "transformers", "trl")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_no_library_module_imports_training_or_torch():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts:  # the command line composes everything
            continue
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: {name}")
    assert offenders == []


def test_routing_and_evaluation_load_without_torch():
    code = (
        "import sys, corl_graph, corl_graph.evaluation, corl_graph.policies, corl_graph.graph;"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or "
        "m.startswith('corl_graph.training')]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
