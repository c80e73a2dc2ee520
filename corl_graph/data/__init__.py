"""Data shipped with corl_graph: numbers only (ids, labels, numeric answers, tokens, costs).

``gsm8k_replay`` holds the recorded outcomes of five LLMs on GSM8K (1,319 queries, ZeroEval
zero-shot runs) with prompts and responses removed; ``scripts/build_bundled_data.py`` made it.
"""

from __future__ import annotations

from importlib import resources

from corl_graph.budget import BudgetTier, TierSet
from corl_graph.experts import OutcomeTable, ReplayExpert

__all__ = ["DEMO_CONTROLLER", "DEMO_MODELS", "demo_experts", "demo_tiers", "load_demo_table"]

DEMO_MODELS = (
    "gemma-2-2b-it",
    "Meta-Llama-3.1-8B-Instruct",
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-2024-08-06",
    "o1-mini-2024-09-12",
)
# The small model that plays the controller in "controller-only" runs, as in CORL.
DEMO_CONTROLLER = "gemma-2-2b-it"
# Every expert's replies are capped at 512 tokens: the cap is enforced on the call and is
# what the ledger reserves for, so it sets the worst-case price of each call.
DEMO_MAX_OUTPUT_TOKENS = 512


def load_demo_table() -> OutcomeTable:
    """The bundled GSM8K replay table (5 models, train and test splits)."""
    path = resources.files("corl_graph.data") / "gsm8k_replay.jsonl.gz"
    with resources.as_file(path) as p:
        return OutcomeTable.load(p)


def demo_experts(table: OutcomeTable) -> list[ReplayExpert]:
    """The bundled models as replayed experts, cheapest first."""
    return [ReplayExpert(table, m, max_output_tokens=DEMO_MAX_OUTPUT_TOKENS) for m in DEMO_MODELS]


def demo_tiers() -> TierSet:
    """Caps chosen against the worst-case price of one call (512 output tokens):
    low affords the small models and gpt-4o-mini, medium one strong call, high several."""
    return TierSet(
        [
            BudgetTier("low", max_usd_per_query=0.0008),
            BudgetTier("medium", max_usd_per_query=0.006),
            BudgetTier("high", max_usd_per_query=0.02),
        ]
    )
