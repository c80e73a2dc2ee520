"""Packages form the DAG drawn in docs/architecture.md: every import between two packages is
an edge of that table, the table has no cycle, and no package imports another package's
private module (or a private name from it). Imports inside functions count too."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
# Source folder -> import name (training/ and integrations/ are mapped into corl_graph).
SOURCES = {
    ROOT / "corl_graph": "corl_graph",
    ROOT / "training": "corl_graph.training",
    ROOT / "integrations": "corl_graph.integrations",
}
# The one exception tree: private by name so that it is reached through each package's API,
# but every package raises its errors, so every package may import it.
SHARED = "corl_graph._exceptions"


def _module_of(path: Path) -> str:
    for folder, name in sorted(SOURCES.items(), key=lambda kv: -len(str(kv[0]))):
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([name, *parts])
    raise AssertionError(f"{path} is outside the package folders")


def package_of(module: str) -> str:
    """``corl_graph.budget._ledger`` -> ``budget``; the top-level modules (``corl_graph``
    itself, ``corl_graph.testing``) are the package ``corl_graph``."""
    if module == SHARED:
        return SHARED
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "testing":
        return "corl_graph"
    return parts[1]


def _is_private(module: str) -> bool:
    """A module whose path below its package has a part starting with ``_``."""
    return module != SHARED and any(p.startswith("_") for p in module.split(".")[2:])


def imports() -> Iterator[tuple[str, int, str, str, list[str]]]:
    """(file, line, importing module, imported module, names imported from it)."""
    for folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            module = _module_of(path)
            is_package = path.name == "__init__.py"
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield rel, node.lineno, module, alias.name, []
                elif isinstance(node, ast.ImportFrom):
                    target = node.module or ""
                    if node.level:  # relative: resolve against the importing package
                        base = module.split(".")
                        base = base[: len(base) - node.level + (1 if is_package else 0)]
                        target = ".".join([*base, target] if target else base)
                    yield rel, node.lineno, module, target, [a.name for a in node.names]


def drawn_dag() -> dict[str, set[str]]:
    """The "may import" table of docs/architecture.md's "Package dependencies" section."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Package dependencies", 1)[1].split("\n## ", 1)[0]
    dag: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([\w.]+)`", cells[1])
        dag[cells[0].strip("`")] = {n.removeprefix("corl_graph.") for n in names}
    keep = ("corl_graph", SHARED)
    return {k if k in keep else k.removeprefix("corl_graph."): v for k, v in dag.items()}


def _cycle(dag: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(dag.get(node, ())):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, node])):
                return found
        state[node] = 2
        return None

    for node in sorted(dag):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_the_drawn_dag_names_every_package_and_has_no_cycle() -> None:
    dag = drawn_dag()
    packages = {package_of(_module_of(p)) for f in SOURCES for p in f.rglob("*.py")}
    assert packages - {SHARED} == set(dag) - {SHARED}, "a row per package in architecture.md"
    unknown = {d for deps in dag.values() for d in deps} - set(dag) - {SHARED}
    assert unknown == set()
    assert _cycle(dag) is None


def test_every_import_between_packages_is_an_edge_of_the_drawn_dag() -> None:
    dag = drawn_dag()
    undrawn = set()
    for rel, line, module, target, _ in imports():
        if not target.startswith("corl_graph"):
            continue
        src, dst = package_of(module), package_of(target)
        if src != dst and dst != SHARED and dst not in dag.get(src, set()):
            undrawn.add(f"{rel}:{line}: {src} -> {dst} ({target})")
    assert sorted(undrawn) == []


def test_no_package_imports_another_packages_private_module() -> None:
    found: set[tuple[str, str]] = set()
    for rel, _, module, target, names in imports():
        if not target.startswith("corl_graph") or package_of(module) == package_of(target):
            continue
        if _is_private(target):
            found.add((rel, target))
        found |= {(rel, f"{target}:{n}") for n in names if n.startswith("_")}
    assert sorted(found) == [], "import it from the package (export it there if need be)"


def test_the_checker_sees_a_private_import_and_a_cycle() -> None:
    assert package_of("corl_graph.budget._ledger") == "budget" and _is_private(
        "corl_graph.budget._ledger"
    )
    assert not _is_private("corl_graph.budget") and not _is_private(SHARED)
    assert package_of("corl_graph.testing") == package_of("corl_graph") == "corl_graph"
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
