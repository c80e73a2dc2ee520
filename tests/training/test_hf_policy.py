"""HFPolicy in the graph: segments, masks and log-probs that training can trust."""

from __future__ import annotations

import asyncio

import pytest
import torch
from corl_graph.training import HFPolicy, logprobs_from_logits
from training_tasks import TinyTask
from transformers import AutoModelForCausalLM, AutoTokenizer

from corl_graph._exceptions import ConfigError
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import Policy


def _policy(task: TinyTask, **kw: object) -> HFPolicy:
    tok = AutoTokenizer.from_pretrained(task.model_dir)
    lm = AutoModelForCausalLM.from_pretrained(task.model_dir)
    return HFPolicy(lm, tok, max_new_tokens=6, seed=0, **kw)  # type: ignore[arg-type]


def test_hf_policy_is_a_policy_and_needs_a_chat_template(tiny_task: TinyTask) -> None:
    policy = _policy(tiny_task)
    assert isinstance(policy, Policy)
    tok = AutoTokenizer.from_pretrained(tiny_task.model_dir)
    tok.chat_template = None
    with pytest.raises(ConfigError, match="chat_template"):
        HFPolicy(policy.model, tok)


async def test_runs_record_the_exact_context_with_controller_only_masks(
    tiny_task: TinyTask,
) -> None:
    policy = _policy(tiny_task)
    router = Router(RouterConfig(experts=tiny_task.experts, policy=policy, max_steps=3))
    results = await asyncio.gather(
        *(
            router.arun(q.text, tier=t, query_id=q.query_id)
            for q in tiny_task.queries[:4]
            for t in ("low", "high")
        )
    )
    for r in results:
        segs = r.trajectory.segments
        assert segs[0].kind == "prompt" and "<budget:" in segs[0].text
        for s in segs:
            assert (s.kind == "controller") == all(s.loss_mask), s.kind
            if s.kind == "controller":
                assert len(s.logprobs) == len(s.token_ids) > 0
        # the sampled log-probs match a teacher-forced pass over the concatenated ids:
        # the segments ARE the model's context, token for token
        ids = torch.tensor([r.trajectory.token_ids])
        with torch.no_grad():
            logits = policy.model(input_ids=ids).logits
        recomputed = logprobs_from_logits(logits[:, :-1], ids[:, 1:])[0]
        mask = torch.tensor(r.trajectory.loss_mask[1:], dtype=torch.bool)
        sampled = torch.tensor([lp for s in segs if s.kind == "controller" for lp in s.logprobs])
        assert torch.allclose(recomputed[mask], sampled, atol=1e-4)


async def test_concurrent_decisions_are_sampled_in_one_batch(tiny_task: TinyTask) -> None:
    policy = _policy(tiny_task)
    sizes: list[int] = []
    generate = policy.generate

    def spy(contexts):  # type: ignore[no-untyped-def]
        sizes.append(len(contexts))
        return generate(contexts)

    policy.generate = spy  # type: ignore[method-assign]
    router = Router(RouterConfig(experts=tiny_task.experts, policy=policy, max_steps=1))
    await asyncio.gather(*(router.arun(q.text, query_id=q.query_id) for q in tiny_task.queries[:6]))
    assert sizes[0] == 6


def test_from_pretrained_with_temperature_zero_decodes_greedily(tiny_task: TinyTask) -> None:
    policy = HFPolicy.from_pretrained(tiny_task.model_dir, temperature=0.0, max_new_tokens=5)
    context = policy.tokenizer("<answer>", add_special_tokens=False)["input_ids"]
    (ids, lps), (again, _) = policy.generate([context, context])
    assert ids == again  # no sampling: both rows take the argmax
    with torch.no_grad():
        logits = policy.model(input_ids=torch.tensor([context])).logits[0, -1]
    assert ids[0] == int(logits.argmax())
    assert lps[0] == pytest.approx(float(torch.log_softmax(logits, -1).max()), abs=1e-5)
    with pytest.raises(ConfigError, match="save_pretrained"):
        HFPolicy.from_pretrained(tiny_task.model_dir / "missing")
