"""``corl-graph train --traces``: warm start, PPO and GRPO on prepared traces from the command
line, with cache misses scored as unavailable or sent live within a ledger-enforced budget."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from traces_cli_fixtures import (
    TIERS_FLAG,
    live_config,
    metrics,
    prepare,
    save_controller,
    store_of_both,
    store_of_strong_only,
    write_labels,
)
from traces_fixtures import toy_table

from corl_graph.budget import open_ledger
from corl_graph.cli import main

# TRL 1.16 reads transformers' deprecated alias; a third-party warning, filtered by name.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)

# The flags of every config (the warm start's too), then those of the RL runs only: a flag
# of another algorithm's config is an error (test_a_flag_of_another_algorithm_is_refused).
SHARED = ["--tiers", TIERS_FLAG, "--minibatch-size", "4", "--max-new-tokens", "6", "--no-progress"]
SMALL = [
    *SHARED, "--iterations", "1", "--episodes-per-iter", "4", "--ppo-epochs", "1",
    "--max-steps", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cli-traces")
    table = toy_table()
    labels = write_labels(table, root / "labels.jsonl")
    return {
        "root": root,
        "table": table,
        "model": save_controller(table, root / "model"),
        "prepared": prepare(store_of_both(table, root), root / "prepared", labels),
        "strong_only": prepare(store_of_strong_only(table, root), root / "strong", labels),
        "serve": live_config(table, root),
    }


def _train(*args: str) -> int:
    return main(["train", *args, *(SHARED if "sft" in args else SMALL)])


def test_sft_warm_start_then_ppo_continues_from_it(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sft, ppo = tmp_path / "sft", tmp_path / "ppo"
    common = ["--traces", str(files["prepared"]), "--learning-rate", "1e-3"]
    # a quarter epoch: one optimizer step (this CPU is shared; test_warm_start checks the loss)
    warm = ["--algo", "sft", "--sft-epochs", "0.25", "--model", str(files["model"])]
    assert _train(*warm, "--output-dir", str(sft), *common) == 0
    assert (sft / "final" / "model.safetensors").is_file()
    (line,) = metrics(sft)
    assert line["sft/recorded"] > 0 and line["sft/boundary"] > 0 and line["sft/steps"] == 1
    assert "done: SFT warm start" in capsys.readouterr().out

    assert _train("--model", str(sft / "final"), "--output-dir", str(ppo), *common) == 0
    (it,) = metrics(ppo)
    # every call the controller (or its fallback) made was answered from the cache or missed
    assert it["cache/hits"] + it["cache/misses"] >= 1
    assert it["cache/live_calls"] == 0 and it["cache/live_usd_total"] == 0
    assert it["cache/refused"] == 0 and it["episodes"] == 4
    state = json.loads((ppo / "final" / "trainer_state.json").read_text())
    assert state["config"]["model"] == str(sft / "final")
    assert state["config"]["traces"] == str(files["prepared"])
    out = capsys.readouterr().out
    assert "done: 1 iterations" in out and "cache:" in out


def test_grpo_on_traces(files: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "grpo"
    code = _train(
        "--algo", "grpo", "--num-generations", "2", "--traces", str(files["prepared"]),
        "--model", str(files["model"]), "--output-dir", str(out), "--kl-coef", "0",
    )  # fmt: skip
    assert code == 0
    assert (out / "final" / "model.safetensors").is_file()
    lines = metrics(out)
    assert lines and any("cache/hits" in m for m in lines)


def test_unavailable_misses_are_failed_calls(files: dict[str, Any], tmp_path: Path) -> None:
    # Only the strong expert was ever recorded; the cheap one's price comes from the serve
    # config, and its every call (the fallback of a random controller) is a miss.
    out = tmp_path / "unavail"
    code = _train(
        "--traces", str(files["strong_only"]), "--live-experts", str(files["serve"]),
        "--model", str(files["model"]), "--output-dir", str(out), "--episodes-per-iter", "8",
        "--minibatch-size", "8",
    )  # fmt: skip
    assert code == 0
    (it,) = metrics(out)
    assert it["cache/misses"] >= 1 and it["cache/live_calls"] == 0


async def _training_spend(url: str) -> Any:
    ledger = open_ledger(url)
    try:
        return await ledger.tenant_spend("training")
    finally:
        await ledger.aclose()


@pytest.fixture(params=["sqlite", "postgres"])
def training_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh ledger URL: a SQLite file, or a PostgreSQL schema of its own (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    psycopg = pytest.importorskip("psycopg")
    base = os.environ.get("CORL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"train_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL at {base} is unreachable ({str(exc).strip()[:80]})")
    yield base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_live_misses_stay_within_the_training_budget(
    files: dict[str, Any], tmp_path: Path, training_ledger_url: str
) -> None:
    out = tmp_path / "live"
    ledger_url = training_ledger_url
    budget = 3e-6  # two cheap calls (1e-6 each, reserved at ~1.2e-6), not three
    code = _train(
        "--traces", str(files["strong_only"]), "--on-miss", "live",
        "--live-experts", str(files["serve"]), "--training-budget-usd", str(budget),
        "--ledger", ledger_url, "--model", str(files["model"]), "--output-dir", str(out),
        "--episodes-per-iter", "8", "--minibatch-size", "8",
    )  # fmt: skip
    assert code == 0
    (it,) = metrics(out)
    assert it["cache/live_calls"] >= 1
    assert it["cache/live_usd_total"] <= budget
    assert it["cache/refused"] >= 1  # misses beyond the budget: failed calls, not a crash
    assert it["cache/misses"] >= it["cache/live_calls"] + it["cache/refused"]
    spent = asyncio.run(_training_spend(ledger_url))
    assert 0 < spent.committed_usd <= budget


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--table", "t.jsonl.gz", "--experts", "a", "--traces", "p"], "exactly one of"),
        ([], "exactly one of"),
        (["--table", "t.jsonl.gz"], "--table needs --experts"),
        (["--traces", "p", "--on-miss", "live"], "--on-miss live needs --live-experts"),
        (["--traces", "p", "--training-budget-usd", "1"], "apply to --on-miss live only"),
        (["--table", "t", "--experts", "a", "--on-miss", "live"], "apply to --traces only"),
        (["--table", "t", "--experts", "a", "--algo", "sft"], "algo='sft'"),
        (["--traces", "no/such/folder"], "does not exist"),
        (
            ["--traces", "p", "--on-miss", "live", "--live-experts", "missing.toml"],
            "cannot read server config",
        ),
    ],
)
def test_wrong_combinations_are_config_errors(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--model", "m", "--output-dir", str(tmp_path), *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_live_needs_a_training_budget(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train", "--model", "m", "--output-dir", str(tmp_path), "--traces",
            str(files["strong_only"]), "--on-miss", "live", "--live-experts", str(files["serve"]),
        ]
    )  # fmt: skip
    assert code == 2
    assert "training_budget_usd" in capsys.readouterr().err


def test_feedback_makes_a_pseudo_reference(tmp_path: Path) -> None:
    from corl_graph.training import PPOConfig, traces_task

    table = toy_table()
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"query_id": "q1", "feedback": "good"}\n{"query_id": "q2", "feedback": 0}\n')
    prepared = prepare(store_of_both(table, tmp_path), tmp_path / "prepared", labels)
    task = traces_task(PPOConfig(model="m", output_dir=str(tmp_path), traces=str(prepared)))
    # q1's recorded answer was scored good: it becomes the reference; q2's was scored bad
    assert [(q.query_id, q.reference) for q in task.queries] == [("q1", "3")]
    assert task.unlabelled == 7
    assert [e.name for e in task.experts] == ["cheap", "strong"]


def _parse_train(*argv: str) -> Any:
    import argparse

    from corl_graph.cli import _train

    parser = argparse.ArgumentParser()
    _train.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


def test_a_config_file_alone_can_name_the_traces(tmp_path: Path) -> None:
    from corl_graph.cli._train import build_config

    file = tmp_path / "train.json"
    file.write_text(
        json.dumps(
            {
                "traces": "prepared/",
                "algo": "sft",
                "on_miss": "unavailable",
                "tiers": [{"name": "low", "max_usd_per_query": 0.001}],
                "sft_epochs": 3,
            }
        )
    )
    config = build_config(_parse_train("--model", "m", "--output-dir", "o", "--config", str(file)))
    assert (config.traces, config.algo, config.sft_epochs) == ("prepared/", "sft", 3)
    assert [t.name for t in config.tiers] == ["low"]

    # flags win over the file; a flag naming the other task conflicts with the file's
    flags = ("--model", "m", "--output-dir", "o", "--config", str(file))
    config = build_config(_parse_train(*flags, "--algo", "ppo", "--tiers", "a=0.1,b=0.2"))
    assert config.algo == "ppo" and [t.name for t in config.tiers] == ["a", "b"]
    with pytest.raises(Exception, match="exactly one of"):
        build_config(_parse_train(*flags, "--table", "t.jsonl.gz", "--experts", "a"))


def test_a_config_file_that_is_not_an_object_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "train.json"
    file.write_text("[1, 2]")
    code = main(["train", "--model", "m", "--output-dir", str(tmp_path), "--config", str(file)])
    assert code == 2
    assert "JSON object" in capsys.readouterr().err


@pytest.mark.slow
def test_grpo_runs_under_torchrun_with_two_processes(files: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "grpo2"
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "corl_graph.cli", "train", "--algo", "grpo", "--num-generations", "2",
            "--traces", str(files["prepared"]), "--model", str(files["model"]),
            "--output-dir", str(out), "--kl-coef", "0", *SMALL,
        ],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # accelerate runs DDP on CPUs (FSDP2 on GPUs); one checkpoint, written once
    assert "done: GRPO, DDP over 2 processes" in done.stdout
    assert (out / "final" / "model.safetensors").is_file()
    assert metrics(out)
