"""The trainable controller: a causal LM plus a scalar value head on its last hidden state.

One ``nn.Module`` whose ``forward`` runs both heads, so FSDP2's root hooks see every call
(calling the LM's submodules from outside would skip the unshard of the root parameters).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

__all__ = ["ActorCritic"]


class ActorCritic(nn.Module):
    """``forward(input_ids, attention_mask) -> (logits (B, T, V), values (B, T))``.

    >>> from corl_graph.training import tiny_llama
    >>> ac = ActorCritic(tiny_llama(32))
    >>> logits, values = ac(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5))
    >>> tuple(logits.shape), tuple(values.shape)
    ((2, 5, 32), (2, 5))
    """

    def __init__(self, lm: PreTrainedModel, *, value_init_std: float = 0.0):
        super().__init__()
        self.lm = lm
        hidden = int(lm.config.hidden_size)
        self.value_head = nn.Linear(hidden, 1)
        # A zero head predicts 0 everywhere at first: advantages start as the raw returns
        # instead of noise from a random head.
        if value_init_std:
            nn.init.normal_(self.value_head.weight, std=value_init_std)
        else:
            nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        backbone = self.lm.get_decoder()
        out = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state  # (B, T, H)
        logits = self.lm.get_output_embeddings()(hidden)  # (B, T, V)
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)  # (B, T)
        return logits, values.float().clone()  # a fresh tensor: FSDP2 hooks dislike views

    def decoder_layers(self) -> list[nn.Module]:
        """The transformer blocks, each its own FSDP unit."""
        return list(self.lm.get_decoder().layers)
