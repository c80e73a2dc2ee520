"""Warm start: best recorded runs per tier and boundary runs, re-enacted with the trainable
model's tokens; TRL's SFTTrainer puts loss on controller tokens only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corl_graph.training import (
    ScriptedPolicy,
    exact_match,
    make_reward,
    select_best,
    sft_trainer,
    sft_warm_start,
    warm_start_examples,
)
from traces_fixtures import TIERS, all_labels, recorded_store, tiny_controller, toy_table
from transformers import AutoModelForCausalLM

from corl_graph.experts import CachedExpert
from corl_graph.trajectories import prepare_traces


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    table = toy_table()
    prep = prepare_traces(recorded_store(tmp_path_factory.mktemp("runs"), table))
    experts = [
        CachedExpert(prep.cache, e, table.prices[e], match="query") for e in ("cheap", "strong")
    ]
    lm, tok = tiny_controller(table)
    return table, prep, experts, lm, tok


def test_select_best_keeps_correct_within_budget_runs(setup) -> None:  # type: ignore[no-untyped-def]
    table, prep, _, _, _ = setup
    best = select_best(prep.trajectories, all_labels(table), TIERS, make_reward(exact_match))
    # low: the cheap expert is right on odd queries; high: the strong one on q0..q3
    assert sorted((t.query_id, t.tier) for t in best) == sorted(
        [(f"q{i}", "low") for i in (1, 3, 5, 7)] + [(f"q{i}", "high") for i in range(4)]
    )


def test_examples_mask_exactly_the_controller_tokens(setup) -> None:  # type: ignore[no-untyped-def]
    table, prep, experts, lm, tok = setup
    examples = warm_start_examples(
        lm,
        tok,
        trajectories=prep.trajectories,
        labels=all_labels(table),
        experts=experts,
        tiers=TIERS,
        reward_fn=make_reward(exact_match),
    )
    sources = {e.source for e in examples}
    assert sources == {"recorded", "boundary:cheap", "boundary:strong"}
    # boundary: cheap in low is right on odd queries; strong is right everywhere but only
    # q0..q3 were ever sent to it, and a cache miss is a failed call (on_miss unavailable)
    assert sum(e.source == "boundary:strong" for e in examples) == 4
    assert sum(e.source == "boundary:cheap" for e in examples) == 4
    ex = next(e for e in examples if e.source == "boundary:strong")
    ids = torch.tensor(ex.input_ids)
    mask = torch.tensor(ex.assistant_masks).bool()
    trained = tok.decode(ids[mask])
    context = tok.decode(ids[~mask])
    assert '<call expert="strong">' in trained and "<answer>" in trained
    assert "The answer is" in context and "The answer is" not in trained  # the expert's reply
    assert "What is" in context and "<|im_end|>" in trained  # the turn's end is learned


def test_sft_loss_is_cross_entropy_on_controller_tokens_only(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    table, prep, experts, lm, tok = setup
    examples = warm_start_examples(
        lm,
        tok,
        trajectories=prep.trajectories,
        labels=all_labels(table),
        experts=experts,
        tiers=TIERS,
        reward_fn=make_reward(exact_match),
        boundary=False,
    )
    trainer = sft_trainer(lm, tok, examples[:2], tmp_path / "sft", batch_size=1)
    # no bf16 autocast on a CPU (TRL's default; emulated there and many times slower)
    assert torch.cuda.is_available() or not trainer.args.bf16
    row = trainer.train_dataset[0]
    mask = torch.tensor(examples[0].assistant_masks).bool()
    labels = torch.tensor(row["labels"])
    assert torch.equal(labels[~mask], torch.full_like(labels[~mask], -100))
    assert torch.equal(labels[mask], torch.tensor(examples[0].input_ids)[mask])
    batch = trainer.data_collator([row])
    with torch.no_grad():
        loss = lm(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        logits = lm(input_ids=batch["input_ids"]).logits[0, :-1]
    target = torch.tensor(examples[0].input_ids)[1:]
    m = mask[1:]
    manual = torch.nn.functional.cross_entropy(logits[m], target[m])
    assert float(loss) == pytest.approx(float(manual), rel=1e-5)


def test_sft_warm_start_trains_and_saves_a_loadable_folder(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    table, prep, experts, lm, tok = setup
    examples = warm_start_examples(
        lm,
        tok,
        trajectories=prep.trajectories,
        labels=all_labels(table),
        experts=experts,
        tiers=TIERS,
        reward_fn=make_reward(exact_match),
    )
    out = tmp_path / "warm"
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    # one optimizer step (this CPU is shared; the loss test above checks what is optimised)
    trainer = sft_warm_start(lm, tok, examples[:4], out, learning_rate=1e-2, batch_size=4)
    assert trainer.state.global_step == 1
    loaded = AutoModelForCausalLM.from_pretrained(out)
    changed = [k for k, v in loaded.state_dict().items() if not torch.equal(v, before[k])]
    assert changed
    assert isinstance(ScriptedPolicy(lm, tok, {}), ScriptedPolicy)
