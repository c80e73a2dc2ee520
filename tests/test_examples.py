"""Every example runs, offline and small, as its README-level promise."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, *args: Any, **kwargs: Any) -> int:
    main = _load(name).main
    result = main(*args, **kwargs)
    code: int = asyncio.run(result) if inspect.iscoroutine(result) else result
    return code


def test_lcel_drop_in(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("lcel_drop_in", []) == 0
    out = capsys.readouterr().out
    assert " low: 4" in out and "cost: $" in out


def test_langgraph_subgraph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("langgraph_subgraph", [str(tmp_path / "c.db")]) == 0
    assert "after a restart: 4" in capsys.readouterr().out


def test_openai_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("openai_server", []) == 0
    out = capsys.readouterr().out
    assert "answer: 4" in out and "429 budget_exhausted" in out


def test_tracing_phoenix_with_an_in_memory_exporter(capsys: pytest.CaptureFixture[str]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert _run("tracing_phoenix", [], provider=provider) == 0
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "invoke_agent corl_router"]
    assert len(roots) == 2
    costs = [s.attributes.get("llm.cost.total") for s in spans if s.attributes]
    assert any(c for c in costs if c)
    assert "trace " in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_train_from_traces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("train_from_traces", [str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pairs 12/12 (100%)" in out and "warm start: 20 sequences" in out
    assert "misses 0" in out and (tmp_path / "ppo" / "final" / "config.json").is_file()
