"""Config errors are clear messages (exit 2), and ``serve --check`` refuses exactly what
``serve`` refuses (issue 19, item 8): an unreachable PostgreSQL or a wrong database used to
end in a uvicorn start-up traceback (exit 3), ``shutdown_grace_s = Infinity`` in an
OverflowError, and ``--check`` accepted four configs that ``serve`` rejected."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from corl_graph.integrations import ServerConfig

from corl_graph._exceptions import ConfigError
from corl_graph.cli import main

ROW = {
    "query_id": "q1",
    "split": "test",
    "prompt": "What is 2 + 2?",
    "model": "small",
    "correct": 1.0,
    "answer": "4",
    "response": "2 + 2 = 4",
    "input_tokens": 12,
    "output_tokens": 6,
    "cost_usd": 1e-6,
}


def _write(tmp_path: Path, text: str, suffix: str = ".json") -> Path:
    path = tmp_path / f"serve{suffix}"
    path.write_text(text)
    return path


def _config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    (tmp_path / "toy.jsonl").write_text(json.dumps(ROW) + "\n")
    prices = {"small": {"input_usd_per_mtok": 0.05, "output_usd_per_mtok": 0.1}}
    (tmp_path / "toy.models.json").write_text(json.dumps(prices))
    base: dict[str, Any] = {
        "tenants": [{"name": "acme", "limit_usd": 1.0, "api_keys": ["sk-acme-0123"]}],
        "experts": [{"kind": "replay", "table": str(tmp_path / "toy.jsonl"), "model": "small"}],
        "policy": {"kind": "cascade", "experts": ["small"]},
        "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}",
        "port": 0,
    }
    base.update(overrides)
    return base


def _both(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, int, str]:
    """Exit codes of ``serve --check`` and of ``serve`` itself, and what they printed."""
    checked = main(["serve", "--config", str(path), "--check"])
    served = main(["serve", "--config", str(path)])
    return checked, served, capsys.readouterr().err


def _bad_configs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (file text, a phrase the error must contain)."""
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("these are not a ledger\n" * 100)
    return {
        "limit Infinity (JSON)": (
            json.dumps(_config(tmp_path)).replace('"limit_usd": 1.0', '"limit_usd": Infinity'),
            "limit_usd",
        ),
        "grace Infinity": (
            json.dumps(_config(tmp_path)).replace(
                '"port": 0', '"port": 0, "shutdown_grace_s": Infinity'
            ),
            "shutdown_grace_s",
        ),
        "price NaN": (
            json.dumps(
                _config(
                    tmp_path,
                    experts=[
                        {
                            "kind": "openai",
                            "name": "x",
                            "model": "m",
                            "price": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
                            "timeout_s": 1,
                        }
                    ],
                )
            ).replace('"timeout_s": 1', '"timeout_s": NaN'),
            "timeout_s",
        ),
        "unreachable PostgreSQL": (
            json.dumps(_config(tmp_path, ledger_url="postgresql://postgres@127.0.0.1:1/test")),
            "cannot connect",
        ),
        "wrong database": (
            json.dumps(
                _config(tmp_path, ledger_url="postgresql://postgres@127.0.0.1:5432/no_such_db_x")
            ),
            "no_such_db_x",
        ),
        "not a ledger file": (
            json.dumps(_config(tmp_path, ledger_url=f"sqlite:///{not_a_db}")),
            "not a usable corl_graph ledger",
        ),
        "policy names an unknown expert": (
            json.dumps(_config(tmp_path, policy={"kind": "cascade", "experts": ["smal"]})),
            "smal",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "limit Infinity (JSON)",
        "grace Infinity",
        "price NaN",
        "unreachable PostgreSQL",
        "wrong database",
        "not a ledger file",
        "policy names an unknown expert",
    ],
)
def test_check_and_serve_refuse_the_same_configs_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    text, phrase = _bad_configs(tmp_path)[case]
    checked, served, err = _both(_write(tmp_path, text), capsys)
    assert (checked, served) == (2, 2), err
    assert phrase in err and "Traceback" not in err


def test_toml_infinity_is_refused_when_the_file_loads(tmp_path: Path) -> None:
    toml = _write(
        tmp_path,
        """
ledger_url = "memory://"
shutdown_grace_s = inf
[[tenants]]
name = "a"
limit_usd = 1
api_keys = ["sk-a"]
""",
        ".toml",
    )
    with pytest.raises(ConfigError, match="shutdown_grace_s"):
        ServerConfig.load(toml)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_a_read_only_ledger_file_is_refused_by_check_and_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, json.dumps(_config(tmp_path)))
    assert main(["serve", "--config", str(config), "--check"]) == 0  # creates the ledger
    (tmp_path / "ledger.db").chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        checked, served, err = _both(config, capsys)
    finally:
        tmp_path.chmod(0o755)
    assert (checked, served) == (2, 2) and "readonly" in err.replace("-", "").replace(" ", "")


def test_check_passes_a_good_config_and_opens_its_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, json.dumps(_config(tmp_path)))
    assert main(["serve", "--config", str(config), "--check"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["experts"] == ["small"] and summary["ledger"] == "sqlite"
    assert (tmp_path / "ledger.db").exists()
