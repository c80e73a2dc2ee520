"""Distributed setup and FSDP2 wrapping (``torch.distributed.fsdp.fully_shard``).

Single process: nothing is wrapped. Under ``torchrun --nproc_per_node=N``: gloo on CPU,
NCCL on GPU; each decoder layer is one FSDP unit, the root holds embeddings, heads and the
value head. Gradients are averaged over ranks by the reduce-scatter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from corl_graph._exceptions import ConfigError

from ._config import RLConfig

__all__ = ["DistInfo", "all_reduce_sum", "init_distributed", "shard", "unwrapped_state_dict"]


@dataclass(frozen=True, slots=True)
class DistInfo:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    fsdp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(config: RLConfig) -> DistInfo:
    """Join the process group torchrun set up (if any) and decide whether to shard."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    fsdp = config.fsdp if config.fsdp is not None else world > 1
    if world > 1 and not fsdp:
        raise ConfigError("several processes need fsdp=True (or None); plain DDP is not supported")
    if fsdp and not dist.is_initialized():
        raise ConfigError(
            "fsdp=True needs a process group: launch with torchrun --nproc_per_node=N"
        )
    return DistInfo(rank, world, device, fsdp)


def shard(
    model: nn.Module,
    layers: list[nn.Module],
    config: RLConfig,
    info: DistInfo,
    *,
    trainable: bool = True,
) -> None:
    """Apply ``fully_shard`` to each of ``layers`` and then the root, with the config's
    options (the frozen reference model is never offloaded)."""
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
    )

    mp_policy = MixedPrecisionPolicy()  # fully_shard's default: parameters as they are
    if config.mixed_precision != "no":
        dtype = torch.bfloat16 if config.mixed_precision == "bf16" else torch.float16
        mp_policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    offload_policy = OffloadPolicy()
    if config.cpu_offload and trainable:
        # pinned memory needs CUDA; gloo-on-CPU runs must not ask for it
        offload_policy = CPUOffloadPolicy(pin_memory=info.device.type == "cuda")
    for layer in layers:
        fully_shard(layer, mp_policy=mp_policy, offload_policy=offload_policy)
    fully_shard(model, mp_policy=mp_policy, offload_policy=offload_policy)


def unwrapped_state_dict(model: nn.Module, *, rank0_only: bool) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on CPU: on every rank, or only rank 0 (for saving)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=rank0_only)
    state = get_model_state_dict(model, options=options)
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        # a module's state dict holds tensors only (full_state_dict gathers DTensors into them)
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} is {type(value).__name__}, not a tensor")
        tensors[key] = value.detach().cpu()
    return tensors


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (identity in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t
