"""Run two PPO updates on a fixed batch, alone or under torchrun, and save the weights.

    python fsdp_worker.py MODEL_DIR OUT.pt                       one process, no FSDP
    torchrun --nproc_per_node=2 fsdp_worker.py MODEL_DIR OUT.pt  FSDP2 over gloo
    ... OUT.pt '{"cpu_offload": true}'                          with PPOConfig overrides

Every process builds the same global batch; rank r trains on rows r, r+N, ... so that the
union of the ranks' minibatches is the single process's minibatch.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from corl_graph.training import PPOConfig, PPOTrainer, QuerySpec, RolloutBatch
from corl_graph.training._fsdp import unwrapped_state_dict

from corl_graph.experts import OutcomeTable, PriceSheet, ReplayExpert


def fixed_batch(vocab: int, rows: int = 8, length: int = 20) -> RolloutBatch:
    g = torch.Generator().manual_seed(123)
    ids = torch.randint(3, vocab, (rows, length), generator=g)
    attn = torch.ones(rows, length, dtype=torch.long)
    for r in range(rows):  # ragged right padding
        attn[r, length - (r % 4) * 2 :] = 0
    ids = ids * attn
    action = torch.zeros(rows, length - 1)
    action[:, 4:9] = 1.0  # a controller turn
    action[:, 12:15] = 1.0  # a second one, after "expert" tokens 9..11
    action = action * attn[:, 1:]
    scores = torch.rand(rows, generator=g)
    return RolloutBatch(ids, attn, action, scores, ["low"] * rows)


def main(model_dir: str, out: str, overrides: str = "{}") -> None:
    table = OutcomeTable.from_rows(
        [
            dict(
                query_id="q",
                split="train",
                model="m",
                correct=1.0,
                input_tokens=1,
                output_tokens=1,
                cost_usd=0.0,
                prompt="x",
            )
        ],
        prices={"m": PriceSheet(0.0, 0.0)},
    )
    config = PPOConfig(
        model=model_dir,
        output_dir="unused",
        table="unused",
        experts=("m",),
        episodes_per_iter=8,
        minibatch_size=8,
        ppo_epochs=2,
        learning_rate=1e-3,
        kl_coef=0.1,
        ent_coef=0.01,
        seed=0,
        progress=False,
        **json.loads(overrides),
    )
    trainer = PPOTrainer(
        config, experts=[ReplayExpert(table, "m")], queries=[QuerySpec("q", "x", "1")]
    )
    batch = fixed_batch(trainer.model.lm.config.vocab_size)
    rank, world = trainer.info.rank, trainer.info.world_size
    initial = {
        k: v.clone() for k, v in unwrapped_state_dict(trainer.model, rank0_only=False).items()
    }
    local = batch.rows(torch.arange(rank, len(batch), world))
    metrics = trainer.update(local)
    state = unwrapped_state_dict(trainer.model, rank0_only=False)
    if rank == 0:
        torch.save({"state": state, "initial": initial, "metrics": metrics}, out)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
