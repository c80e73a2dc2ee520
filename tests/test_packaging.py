"""Packaging: every package folder is installed, and routing never imports torch."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _declared() -> dict[str, Path]:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = {k: ROOT / v for k, v in conf["package-dir"].items()}
    out = {}
    for pkg in conf["packages"]:
        base = max((k for k in mapping if pkg == k or pkg.startswith(k + ".")), key=len)
        rel = pkg[len(base) :].lstrip(".").replace(".", "/")
        out[pkg] = mapping[base] / rel
    return out


def test_every_package_folder_is_declared() -> None:
    declared = {p.resolve() for p in _declared().values()}
    for top in ("corl_graph", "training", "integrations"):
        for init in (ROOT / top).rglob("__init__.py"):
            assert init.parent.resolve() in declared, (
                f"{init.parent} missing from pyproject packages"
            )


def test_training_and_integrations_are_namespaced() -> None:
    code = (
        "import importlib.util, corl_graph.training, corl_graph.integrations;"
        "print(importlib.util.find_spec('training') is None,"
        " importlib.util.find_spec('integrations') is None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    )
    assert out.stdout.split() == ["True", "True"]


def test_routing_does_not_import_torch() -> None:
    code = (
        "import sys, corl_graph, corl_graph.data, corl_graph.cli._demo;"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_bundled_data_holds_no_text() -> None:
    import gzip
    import json
    import re

    number = re.compile(r"^-?\d+(\.\d+)?$")
    with gzip.open(ROOT / "corl_graph" / "data" / "gsm8k_replay.jsonl.gz", "rt") as fh:
        for line in fh:
            row = json.loads(line)
            assert row["prompt"] is None and row["response"] is None
            for field in ("answer", "reference"):
                assert row[field] is None or number.match(row[field])
