"""Batched sampling from a causal LM with a KV cache, keeping each token's log-probability.

Contexts of different lengths are left-padded; position ids are counted over real tokens
only, so a padded row sees the same positions as it would alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

__all__ = ["sample_batch"]


@torch.no_grad()
def sample_batch(
    model: PreTrainedModel,
    contexts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[tuple[list[int], list[float]]]:
    """Sample a continuation of each context; returns (token ids, log-probs) per row.

    A row stops after emitting a stop id (kept: the model must learn to end its turn).
    Log-probs are of the sampling distribution (logits / temperature); ``temperature=0``
    decodes greedily (evaluation) and reports the log-probs of the untempered logits.
    """
    device = next(model.parameters()).device
    B, L = len(contexts), max(len(c) for c in contexts)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    for i, c in enumerate(contexts):
        ids[i, L - len(c) :] = torch.tensor(list(c), dtype=torch.long)
        attn[i, L - len(c) :] = 1
    ids, attn = ids.to(device), attn.to(device)
    stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    out_ids = torch.zeros((B, 0), dtype=torch.long, device=device)
    out_lp = torch.zeros((B, 0), dtype=torch.float32, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    past, step_ids = None, ids
    for _ in range(max_new_tokens):
        positions = (attn.cumsum(-1) - 1).clamp_min(0)[:, -step_ids.shape[1] :]  # (B, t)
        out = model(
            input_ids=step_ids,
            attention_mask=attn,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
        )
        past = out.past_key_values
        if temperature > 0:
            logp = torch.log_softmax(out.logits[:, -1].float() / temperature, dim=-1)  # (B, V)
            token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)  # (B,)
        else:  # greedy (evaluation); log-probs of the untempered distribution
            logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V)
            token = logp.argmax(-1)  # (B,)
        token = torch.where(done, torch.full_like(token, pad_id), token)
        out_ids = torch.cat([out_ids, token[:, None]], dim=1)
        out_lp = torch.cat([out_lp, logp.gather(-1, token[:, None])], dim=1)
        done = done | torch.isin(token, stops)
        if bool(done.all()):
            break
        step_ids = token[:, None]
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)  # finished rows: ignored
    return [_trim(out_ids[i].tolist(), out_lp[i].tolist(), set(stop_ids)) for i in range(B)]


def _trim(ids: list[int], lps: list[float], stops: set[int]) -> tuple[list[int], list[float]]:
    for j, t in enumerate(ids):
        if t in stops:
            return ids[: j + 1], lps[: j + 1]
    return ids, lps
