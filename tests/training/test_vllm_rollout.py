"""VLLMPolicy against a fake vLLM server over real HTTP: the server's token ids come back into
the trajectory untouched, every server problem is a typed error (never a raw traceback), and
PPOTrainer with rollout="vllm" reloads its weights into the server after each update."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from corl_graph.training import (
    GRPOConfig,
    PPOConfig,
    PPOTrainer,
    VLLMPolicy,
    VLLMResponseError,
    VLLMRolloutError,
    VLLMSyncError,
    VLLMTimeoutError,
    VLLMTokenizerMismatchError,
    VLLMUnreachableError,
)
from test_cli_train import _write_table
from training_tasks import TinyTask, tiny_ppo_config
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from vllm_fakes import fake_vllm

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier, TierSet
from corl_graph.cli import main
from corl_graph.graph import Router, RouterConfig, RouteResult

TIERS = (BudgetTier("low", 1e-5), BudgetTier("high", 1e-2))


def _parts(task: TinyTask) -> tuple[PreTrainedModel, Any]:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(task.model_dir), AutoTokenizer.from_pretrained(
        task.model_dir
    )


def _run(task: TinyTask, policy: VLLMPolicy, n: int = 1) -> list[RouteResult]:
    router = Router(
        RouterConfig(task.experts, policy, tiers=TierSet(TIERS), max_steps=2, default_tier="low")
    )

    async def go() -> list[RouteResult]:
        qs = task.queries[:n]
        return list(
            await asyncio.gather(
                *(router.arun(q.text, tier="high", query_id=q.query_id) for q in qs)
            )
        )

    return asyncio.run(go())


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def test_the_servers_token_ids_are_the_trajectorys(tiny_task: TinyTask) -> None:
    lm, tok = _parts(tiny_task)
    with fake_vllm(lm, tok) as fake:
        policy = VLLMPolicy(lm, tok, base_url=fake.url, max_new_tokens=6, seed=3)
        policy.check()
        (result,) = _run(tiny_task, policy)
    assert policy.served_model == "served" and policy.max_model_len == 2048
    written = [s for s in result.trajectory.segments if s.kind == "controller"]
    assert written and [list(s.token_ids) for s in written] == fake.answers
    for s in written:
        assert len(s.logprobs) == len(s.token_ids) and all(lp <= 0 for lp in s.logprobs)
        assert s.text == tok.decode(list(s.token_ids), skip_special_tokens=True)
    # each request's prompt is the run's token ids so far, the answer follows it
    seq = list(result.trajectory.token_ids)
    for body, answer in zip(fake.completions, fake.answers, strict=True):
        n = len(body["prompt"])
        assert seq[:n] == body["prompt"] and seq[n : n + len(answer)] == answer
        assert body["return_token_ids"] is True and body["logprobs"] == 0
        assert body["stop_token_ids"] == [tok.eos_token_id] and body["model"] == "served"
        assert body["max_tokens"] == 6 and body["temperature"] == 1.0
    first = result.trajectory.segments[0]
    assert first.kind == "prompt" and list(first.token_ids) == fake.completions[0]["prompt"]
    assert policy.requests == len(fake.answers)
    assert policy.generated_tokens == sum(len(a) for a in fake.answers)


def test_concurrent_runs_get_different_seeds(tiny_task: TinyTask) -> None:
    lm, tok = _parts(tiny_task)
    with fake_vllm(lm, tok) as fake:
        policy = VLLMPolicy(lm, tok, base_url=fake.url, max_new_tokens=4, seed=0)
        _run(tiny_task, policy, n=4)
    seeds = [b["seed"] for b in fake.completions]
    assert len(seeds) >= 4 and len(set(seeds)) == len(seeds)


@pytest.mark.parametrize(
    ("mode", "error", "words"),
    [
        ("no_token_ids", VLLMResponseError, "return_token_ids"),
        ("short_logprobs", VLLMResponseError, "log-probs for"),
        ("not_json", VLLMResponseError, "not JSON"),
        ("error_500", VLLMResponseError, "answered 500"),
        ("bad_ids", VLLMTokenizerMismatchError, "outside the trainer's vocabulary"),
    ],
)
def test_a_bad_answer_ends_the_run_and_is_raised_after_it(
    tiny_task: TinyTask, mode: str, error: type[Exception], words: str
) -> None:
    lm, tok = _parts(tiny_task)
    with fake_vllm(lm, tok, mode=mode) as fake:
        policy = VLLMPolicy(lm, tok, base_url=fake.url, max_new_tokens=4)
        (result,) = _run(tiny_task, policy)
    assert result.stop_reason == "policy_error"
    with pytest.raises(error, match=words):
        policy.raise_failure()
    policy.raise_failure()  # raised once


def test_a_dead_server_a_slow_one_and_a_wrong_model_are_typed_errors(
    tiny_task: TinyTask,
) -> None:
    lm, tok = _parts(tiny_task)
    with pytest.raises(VLLMUnreachableError, match="no vLLM server answers"):
        VLLMPolicy(lm, tok, base_url=_dead_url()).check()
    with fake_vllm(lm, tok, mode="slow", delay_s=1.0) as fake:
        policy = VLLMPolicy(lm, tok, base_url=fake.url, timeout_s=0.2)
        (result,) = _run(tiny_task, policy)
        assert result.stop_reason == "policy_error"
        with pytest.raises(VLLMTimeoutError, match=r"within 0\.2s"):
            policy.raise_failure()
        with pytest.raises(VLLMResponseError, match="--vllm-model"):
            VLLMPolicy(lm, tok, base_url=fake.url, served_model="other").check()
    with (
        fake_vllm(lm, tok, mode="other_tokenizer") as fake,
        pytest.raises(VLLMTokenizerMismatchError, match="not the trainer's"),
    ):
        VLLMPolicy(lm, tok, base_url=fake.url).check()
    assert issubclass(VLLMTimeoutError, VLLMRolloutError)


def test_a_context_longer_than_the_servers_limit_names_the_flag(tiny_task: TinyTask) -> None:
    lm, tok = _parts(tiny_task)
    with fake_vllm(lm, tok, max_model_len=8) as fake:
        policy = VLLMPolicy(lm, tok, base_url=fake.url)
        policy.check()
        _run(tiny_task, policy)
    with pytest.raises(VLLMResponseError, match="--max-model-len"):
        policy.raise_failure()
    assert not fake.completions


def _config(task: TinyTask, out: Path, **kw: Any) -> PPOConfig:
    return tiny_ppo_config(
        task,
        out,
        **{"tiers": TIERS, "iterations": 2, "learning_rate": 1e-3, "rollout": "vllm", **kw},
    )


def test_ppo_reloads_its_weights_into_the_server_after_each_update(
    tiny_task: TinyTask, tmp_path: Path
) -> None:
    lm, tok = _parts(tiny_task)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    with fake_vllm(lm, tok) as fake:
        trainer = PPOTrainer(
            _config(tiny_task, tmp_path / "run", vllm_url=fake.url),
            experts=tiny_task.experts,
            queries=tiny_task.queries,
        )
        history = trainer.train()
        sync_dir = (tmp_path / "run" / "vllm_weights").resolve()
        # one reload before each rollout: the start weights, then those after update 1
        assert (
            fake.rpcs
            == [{"method": "reload_weights", "kwargs": {"weights_path": str(sync_dir)}}] * 2
        )
        assert fake.resets == 2  # the prefix cache is dropped after every reload
        assert len(fake.answers) >= 8  # every controller turn was sampled by the server
        trainer.policy.sync_weights()  # and once more: the server holds the trained weights
        served = fake.model.state_dict()
    trained = trainer.plain_lm.state_dict()
    assert all(torch.equal(served[k], trained[k]) for k in trained)
    assert any(not torch.equal(before[k], trained[k]) for k in trained)
    for m in history:
        assert m["time/sync_s"] > 0 and m["perf/rollout_tokens_per_s"] > 0


def test_a_server_without_the_reload_route_says_how_to_start_it(
    tiny_task: TinyTask, tmp_path: Path
) -> None:
    lm, tok = _parts(tiny_task)
    with fake_vllm(lm, tok, mode="no_dev_mode") as fake:
        trainer = PPOTrainer(
            _config(tiny_task, tmp_path / "run", vllm_url=fake.url),
            experts=tiny_task.experts,
            queries=tiny_task.queries,
        )
        with pytest.raises(VLLMSyncError, match="VLLM_SERVER_DEV_MODE=1"):
            trainer.train()


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_sync_loads_the_adapter_in_place_and_serves_it(
    tiny_task: TinyTask, tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model

    lm, tok = _parts(tiny_task)
    peft_lm = get_peft_model(lm, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with fake_vllm(lm, tok) as fake:
        policy = VLLMPolicy(
            peft_lm,  # type: ignore[arg-type]
            tok,
            base_url=fake.url,
            sync_dir=tmp_path / "adapter",
            sync_mode="lora",
            lora_name="pol",
        )
        assert policy.sync_weights() > 0
        policy.check()
    assert fake.loras == [
        {
            "lora_name": "pol",
            "lora_path": str((tmp_path / "adapter").resolve()),
            "load_inplace": True,
        }
    ]
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert policy.served_model == "pol" and not fake.rpcs


def test_the_rollout_backend_is_checked_in_the_config(tiny_task: TinyTask, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs vllm_url"):
        _config(tiny_task, tmp_path)
    with pytest.raises(ConfigError, match="apply to rollout='vllm' only"):
        _config(tiny_task, tmp_path, rollout="local", vllm_url="http://x/v1")
    with pytest.raises(ConfigError, match="rollout must be"):
        _config(tiny_task, tmp_path, rollout="remote")
    with pytest.raises(ConfigError, match="PPO's"):
        GRPOConfig(
            model="m", output_dir="o", table="t", experts=("a",), rollout="vllm", vllm_url="u"
        )


def _cli(task: TinyTask, tmp_path: Path, url: str) -> list[str]:
    table = _write_table(task, tmp_path)
    return [
        "train",
        "--model",
        str(task.model_dir),
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
        "--rollout",
        "vllm",
        "--vllm-url",
        url,
    ]


def test_cli_trains_with_vllm_rollouts_and_a_dead_server_is_one_line(
    tiny_task: TinyTask, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lm, tok = _parts(tiny_task)
    with fake_vllm(lm, tok) as fake:
        assert main([*_cli(tiny_task, tmp_path, fake.url), "--vllm-timeout-s", "60"]) == 0
    assert "done: 1 iterations" in capsys.readouterr().out
    assert fake.answers and len(fake.rpcs) == 1
    assert main(_cli(tiny_task, tmp_path, _dead_url())) == 2
    err = capsys.readouterr().err  # (besides transformers' progress bars)
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert "Traceback" not in err and len(errors) == 1
    assert errors[0].startswith("corl-graph train: error: no vLLM server answers")
