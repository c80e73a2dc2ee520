"""``corl-graph train`` parses flags into a PPOConfig and runs the trainer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from training_tasks import TinyTask

from corl_graph.cli import main
from corl_graph.cli._train import parse_tiers


def _write_table(task: TinyTask, folder: Path) -> Path:
    rows = []
    for qid, q in task.table.queries.items():
        for m in task.table.models:
            o = task.table.outcome(qid, m)
            rows.append(
                dict(
                    query_id=qid,
                    split=q.split,
                    task=q.task,
                    prompt=q.prompt,
                    reference=q.reference,
                    model=m,
                    correct=o.correct,
                    answer=o.answer,
                    response=o.response,
                    input_tokens=o.input_tokens,
                    output_tokens=o.output_tokens,
                    cost_usd=o.cost_usd,
                )
            )
    path = folder / "toy.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    prices = {
        m: {
            "input_usd_per_mtok": p.input_usd_per_mtok,
            "output_usd_per_mtok": p.output_usd_per_mtok,
        }
        for m, p in task.table.prices.items()
    }
    (folder / "toy.models.json").write_text(json.dumps(prices))
    return path


@pytest.mark.slow
def test_cli_trains_and_writes_metrics(
    tiny_task: TinyTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _write_table(tiny_task, tmp_path)
    code = main(
        [
            "train",
            "--algo",
            "ppo",
            "--model",
            str(tiny_task.model_dir),
            "--table",
            str(table),
            "--experts",
            "cheap,strong",
            "--tiers",
            "low=0.00001,high=0.01",
            "--output-dir",
            str(tmp_path / "out"),
            "--iterations",
            "1",
            "--episodes-per-iter",
            "2",
            "--minibatch-size",
            "2",
            "--max-new-tokens",
            "4",
            "--max-steps",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "done: 1 iterations" in capsys.readouterr().out
    assert (tmp_path / "out" / "metrics.jsonl").is_file()
    assert (tmp_path / "out" / "final" / "model.safetensors").is_file()


def test_cli_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "train",
            "--model",
            "m",
            "--table",
            "t",
            "--experts",
            "a",
            "--output-dir",
            str(tmp_path),
            "--episodes-per-iter",
            "6",
            "--minibatch-size",
            "4",
        ]
    )
    assert code == 2
    assert "multiple of minibatch_size" in capsys.readouterr().err
    with pytest.raises(Exception, match="NAME=USD"):
        parse_tiers("low:0.1")


def test_cli_one_line_errors_for_model_and_tensorboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    table = ["--table", "t", "--experts", "a", "--output-dir", str(tmp_path)]
    assert main(["train", "--model", str(tmp_path / "missing"), *table]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert main(["train", "--model", str(tmp_path / "empty"), *table]) == 2
    assert "has no config.json" in capsys.readouterr().err
    if importlib.util.find_spec("tensorboard") is None:
        (tmp_path / "empty" / "config.json").write_text("{}")
        assert main(["train", "--model", str(tmp_path / "empty"), *table, "--tensorboard"]) == 2
        assert "pip install tensorboard" in capsys.readouterr().err


def test_tiers_take_a_target_after_the_cap() -> None:
    assert parse_tiers("low=0.002:0.0005,high=0.05") == [
        {"name": "low", "max_usd_per_query": 0.002, "target_usd_per_query": 0.0005},
        {"name": "high", "max_usd_per_query": 0.05},
    ]


def test_traces_record_writes_runs_that_prepare_reads(
    tiny_task: TinyTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _write_table(tiny_task, tmp_path)
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    args = ["traces", "record", "--table", str(table), "--experts", "cheap,strong"]
    assert main([*args, "--store", store, "--tiers", "low=0.001,high=0.01"]) == 0
    assert "recorded 24 runs (12 queries x 2 tiers)" in capsys.readouterr().out
    assert main(["traces", "prepare", "--store", store, "--out", str(tmp_path / "p")]) == 0
    assert "24 runs, 12 queries" in capsys.readouterr().out
    assert main([*args, "--store", store, "--policy", "always:nobody"]) == 2
    assert "always:NAME" in capsys.readouterr().err


def test_cli_flags_set_the_target_margin_and_per_tier_whitening() -> None:
    import argparse

    from corl_graph.cli._train import add_parser, build_config

    sub = argparse.ArgumentParser().add_subparsers()
    parser = add_parser(sub)
    base = ["--model", "m", "--table", "t", "--experts", "a", "--output-dir", "o"]
    flags = ["--tiers", "low=0.002:0.0005", "--cost-constraint", "lagrange"]
    cfg = build_config(
        parser.parse_args([*base, *flags, "--target-margin", "0.1", "--whiten-by-tier"])
    )
    assert (cfg.target_margin, cfg.whiten_by_tier) == (0.1, True)
    cfg = build_config(parser.parse_args(base))
    assert (cfg.target_margin, cfg.whiten_by_tier) == (0.0, False)
