"""Checkpoints: a ``save_pretrained`` folder that transformers (and vLLM) load directly, plus
what resuming needs: the value head, the optimizer state and the trainer's position.

Layout::

    ckpt/
      config.json, model.safetensors, generation_config.json   the controller (save_pretrained)
      tokenizer.json, tokenizer_config.json, chat_template.jinja   tokenizer + chat template
      value_head.pt          the critic's head (not needed for serving)
      optimizer.pt           full (unsharded) optimizer state
      trainer_state.json     iteration, PPOConfig
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from corl_graph._exceptions import ConfigError

from ._fsdp import DistInfo, unwrapped_state_dict
from ._model import ActorCritic

__all__ = ["load_training_state", "save_checkpoint"]


def save_checkpoint(
    path: str | Path,
    model: ActorCritic,
    plain_lm: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    info: DistInfo,
    state: dict[str, Any],
) -> Path:
    """Write a checkpoint; every rank must call it (gathering shards is collective).

    ``plain_lm`` is an unsharded model of the same architecture, used to write the folder.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    out = Path(path)
    full = unwrapped_state_dict(model, rank0_only=info.fsdp)
    options = StateDictOptions(full_state_dict=True, cpu_offload=info.fsdp)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options)
    if not info.is_main:
        return out
    out.mkdir(parents=True, exist_ok=True)
    lm_state = {k.removeprefix("lm."): v for k, v in full.items() if k.startswith("lm.")}
    head = {
        k.removeprefix("value_head."): v for k, v in full.items() if k.startswith("value_head.")
    }
    plain_lm.load_state_dict(lm_state)
    plain_lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    torch.save(head, out / "value_head.pt")
    torch.save(optim_state, out / "optimizer.pt")
    (out / "trainer_state.json").write_text(json.dumps(state, indent=2, default=str))
    return out


def load_training_state(
    path: str | Path, model: ActorCritic, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore the value head and optimizer state (the LM weights were loaded from ``path``
    with ``from_pretrained``); returns ``trainer_state.json``. Call on every rank after
    sharding."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    src = Path(path)
    for name in ("value_head.pt", "optimizer.pt", "trainer_state.json"):
        if not (src / name).is_file():
            raise ConfigError(
                f"{src} is not a training checkpoint: {name} is missing "
                "(resume needs a folder written by the trainer)"
            )
    head = torch.load(src / "value_head.pt", map_location="cpu", weights_only=True)
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, {f"value_head.{k}": v for k, v in head.items()}, options=options)
    optim_state = torch.load(src / "optimizer.pt", map_location="cpu", weights_only=False)
    set_optimizer_state_dict(
        model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True)
    )
    state: dict[str, Any] = json.loads((src / "trainer_state.json").read_text())
    return state
