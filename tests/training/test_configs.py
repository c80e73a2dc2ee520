"""One config per algorithm on a shared base: each refuses what it does not take, with an
error that names the fix, and the CLI builds the --algo's config from its fields only."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from corl_graph.training import (
    GRPOConfig,
    PPOConfig,
    RLConfig,
    SFTConfig,
    TrainConfig,
    config_class,
    config_from_dict,
)

from corl_graph._exceptions import ConfigError
from corl_graph.budget import default_tiers

TABLE: dict[str, Any] = {"model": "m", "output_dir": "o", "table": "t.jsonl.gz", "experts": ("a",)}
TRACES: dict[str, Any] = {"model": "m", "output_dir": "o", "traces": "prepared/"}


def test_each_algorithm_has_only_its_own_fields() -> None:
    assert {"gamma", "lam", "vf_coef", "value_clip"} <= PPOConfig.field_names()
    assert not {"gamma", "vf_coef", "sft_epochs"} & GRPOConfig.field_names()
    assert {"num_generations", "trl_options"} <= GRPOConfig.field_names()
    assert not {"num_generations", "sft_epochs"} & PPOConfig.field_names()
    assert not {"iterations", "clip", "kl_coef", "fsdp", "resume_from"} & SFTConfig.field_names()
    shared = PPOConfig.field_names() & GRPOConfig.field_names() & SFTConfig.field_names()
    assert shared == TrainConfig.field_names()
    assert PPOConfig.field_names() & GRPOConfig.field_names() == RLConfig.field_names()
    assert [config_class(a).__name__ for a in ("ppo", "grpo", "sft")] == [
        "PPOConfig",
        "GRPOConfig",
        "SFTConfig",
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PPOConfig(**TABLE, algo="grpo"), r"use GRPOConfig\(\.\.\.\)"),
        (lambda: PPOConfig(**TABLE, algo="sac"), "'ppo', 'grpo' or 'sft'"),
        (lambda: SFTConfig(**TRACES, algo="ppo"), "use PPOConfig"),
        (lambda: TrainConfig(**TABLE), "use PPOConfig, GRPOConfig or SFTConfig"),
        (lambda: RLConfig(**TABLE), "shared base"),
        (lambda: GRPOConfig(**TABLE, num_generations=1), "num_generations must be >= 2"),
        (
            lambda: GRPOConfig(**TABLE, episodes_per_iter=6, minibatch_size=6, num_generations=4),
            "multiples of num_generations",
        ),
        (
            lambda: GRPOConfig(**TABLE, trl_options={"learning_rate": 1.0, "logging_steps": 5}),
            r"learning_rate -> GRPOConfig\.learning_rate",
        ),
        (lambda: SFTConfig(**TABLE), "set traces= \\(--traces\\), not table="),
        (lambda: SFTConfig(**TRACES, sft_epochs=0), "sft_epochs must be > 0"),
        (lambda: PPOConfig(**TABLE, ledger_url="sqlite:///x.db"), "set on_miss='live'"),
        (lambda: PPOConfig(**TABLE, on_miss="live"), "apply to --traces only"),
        (lambda: GRPOConfig(**TRACES, on_miss="live"), "needs training_budget_usd >= 0"),
        (lambda: PPOConfig(model="m", output_dir="o"), "exactly one of table="),
        (lambda: SFTConfig(**TRACES, minibatch_size=0), "SFTConfig.minibatch_size must be >= 1"),
        (lambda: GRPOConfig(**TABLE, clip=0), "GRPOConfig.clip must be > 0"),
        (lambda: PPOConfig(**TABLE, gamma=1.5), r"gamma must be in \[0, 1\]"),
    ],
)
def test_bad_configs_are_refused_with_the_fix(make: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_configs_round_trip_through_dicts_and_name_a_stray_field() -> None:
    configs = [
        PPOConfig(**TABLE, gamma=0.9),
        GRPOConfig(**TABLE, num_generations=2, trl_options={"logging_steps": 5}),
        SFTConfig(**TRACES, sft_epochs=3.0),
    ]
    for config in configs:
        data = json.loads(json.dumps(config.to_dict()))
        assert data["algo"] == config.algo == config.kind
        assert config_from_dict(data) == config
    with pytest.raises(ConfigError, match="num_generations is a field of GRPOConfig"):
        PPOConfig.from_dict({**TABLE, "num_generations": 2})
    with pytest.raises(ConfigError, match="sft_epoch is no config's field"):
        SFTConfig.from_dict({**TRACES, "sft_epoch": 2})
    assert config_from_dict(TABLE).algo == "ppo"


def _args(*argv: str) -> argparse.Namespace:
    from corl_graph.cli import _train

    parser = argparse.ArgumentParser()
    _train.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", "--model", "m", "--output-dir", "o", *argv])


def test_the_cli_builds_the_algorithms_config_from_its_fields() -> None:
    from corl_graph.cli._train import build_config

    table = ("--table", "t.jsonl.gz", "--experts", "a,b")
    grpo = build_config(
        _args(*table, "--algo", "grpo", "--num-generations", "2", "--temperature", "0.7")
    )
    assert isinstance(grpo, GRPOConfig)
    assert (grpo.num_generations, grpo.temperature, grpo.experts) == (2, 0.7, ("a", "b"))
    ppo = build_config(_args(*table, "--kl-coef", "0.1"))
    assert isinstance(ppo, PPOConfig) and ppo.kl_coef == 0.1
    # no --tiers: the config's own default, the budget package's tiers (no copy in the CLI)
    assert ppo.tiers == tuple(default_tiers().values())
    sft = build_config(_args("--traces", "p", "--algo", "sft", "--sft-epochs", "2"))
    assert isinstance(sft, SFTConfig) and sft.sft_epochs == 2.0
    with pytest.raises(ConfigError, match="--num-generations applies to --algo grpo only"):
        build_config(_args(*table, "--num-generations", "2"))
    with pytest.raises(ConfigError, match="--iterations applies to --algo ppo or grpo only"):
        build_config(_args("--traces", "p", "--algo", "sft", "--iterations", "3"))
    with pytest.raises(ConfigError, match="--sft-epochs applies to --algo sft only"):
        build_config(_args(*table, "--algo", "grpo", "--sft-epochs", "2"))
    with pytest.raises(ConfigError, match="multiples of num_generations"):
        build_config(_args(*table, "--algo", "grpo", "--num-generations", "3"))


def test_a_config_file_serves_several_algorithms(tmp_path: Path) -> None:
    from corl_graph.cli._train import build_config

    file = tmp_path / "train.json"
    fields = {"traces": "p", "sft_epochs": 2, "num_generations": 2, "gamma": 0.9}
    file.write_text(json.dumps(fields))
    sft = build_config(_args("--config", str(file), "--algo", "sft"))
    grpo = build_config(_args("--config", str(file), "--algo", "grpo"))
    ppo = build_config(_args("--config", str(file)))
    assert (sft.sft_epochs, grpo.num_generations, ppo.gamma) == (2.0, 2, 0.9)
    with pytest.raises(ConfigError, match="--num-generations applies to --algo grpo only"):
        build_config(_args("--config", str(file), "--num-generations", "2"))  # a flag is not
    file.write_text(json.dumps({**fields, "num_generation": 2}))
    with pytest.raises(ConfigError, match="num_generation is no config's field"):
        build_config(_args("--config", str(file)))
