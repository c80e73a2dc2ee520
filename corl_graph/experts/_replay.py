"""Experts that answer from recorded outcomes, so evaluation and training need no live model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corl_graph._exceptions import ConfigError, ExpertError
from corl_graph.experts._expert import Expert, ExpertReply, ExpertRequest
from corl_graph.experts._table import OutcomeTable

__all__ = ["ReplayExpert", "no_text_marker", "replay_experts"]


class ReplayExpert(Expert):
    """Answers query ``request.query_id`` with ``model``'s recorded answer, tokens and cost.

    Its ``max_output_tokens`` defaults to the longest recorded reply of that model, so the
    worst-case reservation covers every recorded call. A reply longer than a smaller limit is
    cut: charged at the limit, with no answer, finish reason ``length``.

    Rows without text (no answer, no response) reply with a marker text, so the run has an
    answer to give; the harness judges it by the row's recorded ``correct``. Rows whose
    tokens were not recorded (0) cannot be priced from tokens: the reservation is then at
    least the model's priciest recorded call, so a recorded cost never overruns it.
    """

    provider = "replay"

    def __init__(
        self,
        table: OutcomeTable,
        model: str,
        *,
        name: str | None = None,
        description: str = "",
        **limits: Any,
    ):
        if model not in table.prices:
            raise ConfigError(
                f"model {model!r} is not in table {table.name!r}; models: {', '.join(table.models)}"
            )
        limits.setdefault("max_output_tokens", table.max_output_tokens(model))
        limits.setdefault("max_retries", 0)
        super().__init__(name or model, table.prices[model], description=description, **limits)
        self.table = table
        self.model = model
        self.model_name = model
        self._cost_factor, self._floor_usd = _recorded_over_priced(table, model)

    def worst_case(self, request: ExpertRequest) -> tuple[int, float]:
        # Recorded costs can exceed tokens x list price (RouterBench's token counts are
        # estimates); scale the reservation by the table's worst ratio for this model so a
        # recorded cost never overruns its reservation.
        tokens, usd = super().worst_case(request)
        return tokens, max(usd * self._cost_factor, self._floor_usd)

    def worst_case_input_tokens(self, request: ExpertRequest) -> int:
        if request.query_id in self.table.queries:
            return self.table.outcome(request.query_id, self.model).input_tokens
        return super().worst_case_input_tokens(request)

    async def agenerate(self, request: ExpertRequest) -> ExpertReply:
        if request.query_id not in self.table.queries:
            raise ExpertError(
                f"replayed expert {self.name!r} has no recording for query {request.query_id!r} "
                f"(table {self.table.name!r})",
                expert=self.name,
            )
        o = self.table.outcome(request.query_id, self.model)
        text = o.response if o.response is not None else (o.answer or "")
        if not o.has_text:
            text = no_text_marker(self.model)
        if o.output_tokens > self.max_output_tokens:
            out = self.max_output_tokens
            return ExpertReply(
                text=text,
                input_tokens=o.input_tokens,
                output_tokens=out,
                finish_reason="length",
                response_model=self.model,
                answer=None,
                cost_usd=self.price.cost(o.input_tokens, out),
            )
        return ExpertReply(
            text=text,
            input_tokens=o.input_tokens,
            output_tokens=o.output_tokens,
            finish_reason="stop",
            response_model=self.model,
            answer=o.answer,
            cost_usd=o.cost_usd,
        )


def no_text_marker(model: str) -> str:
    """The reply text of a row that records no text (judged by its recorded score)."""
    return f"[no recorded text: {model}]"


def _recorded_over_priced(table: OutcomeTable, model: str) -> tuple[float, float]:
    """(factor, floor): recorded cost / tokens x price at worst, over rows with priced tokens;
    the priciest recorded cost of rows that cannot be priced (no tokens, or a zero price)."""
    price = table.prices[model]
    factor, floor = 1.0, 0.0
    for qid in table.queries:
        o = table.outcome(qid, model)
        priced = price.cost(o.input_tokens, o.output_tokens)
        if priced > 0:
            factor = max(factor, o.cost_usd / priced)
        else:
            floor = max(floor, o.cost_usd)
    if floor > 0:  # some rows are unpriceable: hold every call at least at the priciest one
        floor = max(floor, table.max_cost(model))
    return factor, floor


def replay_experts(table: OutcomeTable, models: Sequence[str] | None = None) -> list[ReplayExpert]:
    """One replayed expert per model of ``table`` (all models by default), cheapest first."""
    chosen = list(models) if models is not None else table.models
    experts = [ReplayExpert(table, m) for m in chosen]
    return sorted(experts, key=lambda e: (e.price.output_usd_per_mtok, e.name))
