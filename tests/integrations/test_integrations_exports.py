"""corl_graph.integrations exports exactly its public names, and imports without FastAPI."""

from __future__ import annotations

import subprocess
import sys

import corl_graph.integrations as integrations


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in dir(integrations) if not n.startswith("_")} - {
        "annotations",
        "Any",
        "TYPE_CHECKING",
    }
    lazy = {"create_app", "ServerThread"}
    assert set(integrations.__all__) == public | lazy
    for name in integrations.__all__:
        assert getattr(integrations, name) is not None


def test_import_does_not_load_the_server_stack() -> None:
    code = (
        "import sys, corl_graph.integrations; "
        "print(any(m in sys.modules for m in ('fastapi', 'uvicorn', 'starlette')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
