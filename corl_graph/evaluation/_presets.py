"""Expert pools and tier caps for the recorded tables, chosen once and documented here.

Each pool spans prices from a small "controller" model to the table's flagship, 5-6 models.
Caps are per query and are compared with the *worst-case reservation* of a call (input
tokens + the model's longest recorded reply, at list price), not its mean cost:

- low: the cheap models only (several of them), never a flagship;
- medium: one flagship call plus cheap ones;
- high: the flagship and more (room to verify and vote).
"""

from __future__ import annotations

from dataclasses import dataclass

from corl_graph._exceptions import ConfigError
from corl_graph.budget import BudgetTier, TierSet
from corl_graph.experts import OutcomeTable, ReplayExpert

__all__ = ["PRESETS", "TablePreset", "preset_experts", "preset_for"]


@dataclass(frozen=True)
class TablePreset:
    """A pool of models of one table, its controller model and its tiers."""

    table: str
    pool: tuple[str, ...]
    controller: str
    caps: tuple[tuple[str, float], ...]
    max_output_tokens: int | None = None

    def tiers(self) -> TierSet:
        return TierSet([BudgetTier(name, cap) for name, cap in self.caps])


PRESETS: dict[str, TablePreset] = {
    # ARC: one-letter replies, so worst cases are input-dominated and close to the mean.
    # Flagship calls (claude-v1, gpt-4) reserve ~5-6e-3; cheap ones <= 6e-4.
    "routerbench_arc": TablePreset(
        "routerbench_arc",
        (
            "mistralai/mistral-7b-chat",
            "mistralai/mixtral-8x7b-chat",
            "zero-one-ai/Yi-34B-Chat",
            "gpt-3.5-turbo-1106",
            "claude-v1",
            "gpt-4-1106-preview",
        ),
        "mistralai/mistral-7b-chat",
        (("low", 0.0015), ("medium", 0.008), ("high", 0.02)),
    ),
    # MBPP: code, no votable answer. Recorded costs run up to 2.6x tokens x price, and the
    # reservations scale with it: mistral-7b reserves ~2.1e-3 (its longest reply is 4k
    # tokens), gpt-4 ~2.8e-2.
    "routerbench_mbpp": TablePreset(
        "routerbench_mbpp",
        (
            "mistralai/mistral-7b-chat",
            "meta/code-llama-instruct-34b-chat",
            "mistralai/mixtral-8x7b-chat",
            "gpt-3.5-turbo-1106",
            "claude-instant-v1",
            "gpt-4-1106-preview",
        ),
        "mistralai/mistral-7b-chat",
        (("low", 0.003), ("medium", 0.03), ("high", 0.06)),
    ),
    # GSM8K: the pool of the bundled demo table plus two strong cheap models; replies capped
    # at 512 tokens as in the demo (a worst-case o1-mini call reserves ~7e-3).
    "zeroeval_gsm8k": TablePreset(
        "zeroeval_gsm8k",
        (
            "gemma-2-2b-it",
            "gemini-1.5-flash",
            "deepseek-chat",
            "gpt-4o-mini-2024-07-18",
            "gpt-4o-2024-08-06",
            "o1-mini-2024-09-12",
        ),
        "gemma-2-2b-it",
        (("low", 0.0008), ("medium", 0.006), ("high", 0.02)),
        max_output_tokens=512,
    ),
}


def preset_for(table: str) -> TablePreset:
    try:
        return PRESETS[table]
    except KeyError:
        raise ConfigError(
            f"no preset for table {table!r}; presets: {', '.join(PRESETS)} "
            "(or pass --pool and --caps)"
        ) from None


def preset_experts(table: OutcomeTable, preset: TablePreset) -> list[ReplayExpert]:
    """The preset's pool as replayed experts, cheapest (by output price) first."""
    experts = [
        ReplayExpert(table, m)
        if preset.max_output_tokens is None
        else ReplayExpert(table, m, max_output_tokens=preset.max_output_tokens)
        for m in preset.pool
    ]
    return sorted(experts, key=lambda e: (e.price.output_usd_per_mtok, e.name))
