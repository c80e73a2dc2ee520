"""Every docstring example of the package runs, and prints what it shows.

The modules are found by walking the three package roots (training/ and integrations/ are
mapped into the corl_graph namespace by setuptools, so each is walked from its own path).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

ROOTS = ("corl_graph", "corl_graph.training", "corl_graph.integrations")


def _modules() -> list[str]:
    names: set[str] = set()
    for root in ROOTS:
        package = importlib.import_module(root)
        names.add(root)
        for info in pkgutil.walk_packages(package.__path__, prefix=root + "."):
            if not info.name.endswith(".__main__"):  # importing it would run the CLI
                names.add(info.name)
    return sorted(names)


MODULES = _modules()


def test_every_package_root_was_walked() -> None:
    for root in ROOTS:
        assert any(m.startswith(root + ".") for m in MODULES), root


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
