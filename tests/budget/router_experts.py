"""Two fake chat experts for the tests that route through the ledger (per-query envelopes,
budget slices). Imported by its own unique name, like ledger_backends."""

from __future__ import annotations

from corl_graph import ChatModelExpert, PriceSheet
from corl_graph.testing import FakeChatModel


def two_experts(delay_s: float = 0.0) -> list[ChatModelExpert]:
    """Experts "a" and "b": 100 tokens in, 20 out, $1 / $10 per million, answers "4"."""
    return [
        ChatModelExpert(
            name,
            FakeChatModel(reply, input_tokens=100, output_tokens=20, delay_s=delay_s),
            PriceSheet(1.0, 10.0),
            max_output_tokens=200,
            timeout_s=5.0,
            retry_backoff_s=0.0,
        )
        for name, reply in (("a", "It is 4"), ("b", "The answer is 4"))
    ]
