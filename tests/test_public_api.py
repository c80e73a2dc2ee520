"""The exported names are exactly the public ones (as httpx's test_exported_members)."""

import importlib

import pytest

import corl_graph

PACKAGES = [
    "corl_graph",
    "corl_graph.budget",
    "corl_graph.experts",
    "corl_graph.graph",
    "corl_graph.policies",
    "corl_graph.protocol",
    "corl_graph.tracing",
    "corl_graph.trajectories",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and getattr(v, "__module__", "").startswith("corl_graph")
        and not isinstance(v, type(module))
    }
    exported = set(module.__all__)
    assert public <= exported | {"annotations"}, f"public but not in __all__: {public - exported}"
    for n in exported:
        assert hasattr(module, n), f"{name}.__all__ lists missing {n}"
    assert len(set(module.__all__)) == len(module.__all__), "duplicates in __all__"


def test_top_level_covers_the_main_entry_points() -> None:
    for n in (
        "Router",
        "RouterConfig",
        "create_router_graph",
        "ChatModelExpert",
        "BudgetTier",
        "open_ledger",
        "LLMPolicy",
        "CorlError",
    ):
        assert n in corl_graph.__all__


def test_lazy_exports_match_what_type_checkers_see() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(corl_graph))
    checked: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                checked.update({a.name: imp.module or "" for a in imp.names})
    assert checked == corl_graph._LAZY
    for name, module in checked.items():
        assert getattr(corl_graph, name) is getattr(importlib.import_module(module), name)
