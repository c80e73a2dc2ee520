"""Attribute names: OpenTelemetry GenAI conventions, OpenInference (Phoenix), and ours."""

from __future__ import annotations

__all__ = [
    "BUDGET_REMAINING",
    "BUDGET_TIER",
    "CALL_ATTEMPTS",
    "CALL_STATUS",
    "COST_ESTIMATED",
    "COST_RESERVED",
    "COST_TOTAL",
    "EXPERT",
    "GEN_AI_COST",
    "GEN_AI_ERROR_TYPE",
    "GEN_AI_FINISH_REASONS",
    "GEN_AI_INPUT_MESSAGES",
    "GEN_AI_INPUT_TOKENS",
    "GEN_AI_OPERATION",
    "GEN_AI_OUTPUT_MESSAGES",
    "GEN_AI_OUTPUT_TOKENS",
    "GEN_AI_PROVIDER",
    "GEN_AI_REQUEST_MAX_TOKENS",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_TOKEN_TYPE",
    "LLM_COST_TOTAL",
    "LLM_TOKENS_COMPLETION",
    "LLM_TOKENS_PROMPT",
    "LLM_TOKENS_TOTAL",
    "METRIC_CALLS",
    "METRIC_COST",
    "METRIC_DURATION",
    "METRIC_TOKEN_USAGE",
    "OPENINFERENCE_KIND",
    "TENANT",
    "USAGE_INPUT_TOTAL",
    "USAGE_OUTPUT_TOTAL",
]

GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_PROVIDER = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"  # metric attribute: "input" | "output"
# Opt-in content (record_content=True only), as JSON in the GenAI message schema.
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_ERROR_TYPE = "error.type"
GEN_AI_COST = "gen_ai.usage.cost"  # read by Langfuse
LLM_COST_TOTAL = "llm.cost.total"  # OpenInference / Phoenix
LLM_TOKENS_PROMPT = "llm.token_count.prompt"
LLM_TOKENS_COMPLETION = "llm.token_count.completion"
LLM_TOKENS_TOTAL = "llm.token_count.total"
OPENINFERENCE_KIND = "openinference.span.kind"
BUDGET_TIER = "corl.budget.tier"
BUDGET_REMAINING = "corl.budget.remaining_usd"
TENANT = "corl.tenant"
COST_ESTIMATED = "corl.cost.estimated"
COST_RESERVED = "corl.cost.reserved_usd"
EXPERT = "corl.expert"
CALL_STATUS = "corl.call.status"
CALL_ATTEMPTS = "corl.call.attempts"
# Per-query totals live under our own names on the query span: putting gen_ai.usage.cost or
# llm.cost.total there too would make Langfuse and Phoenix, which sum those over a trace's
# spans, count every dollar twice.
COST_TOTAL = "corl.cost.total_usd"
USAGE_INPUT_TOTAL = "corl.usage.input_tokens"
USAGE_OUTPUT_TOTAL = "corl.usage.output_tokens"

# Metric instruments.
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_DURATION = "gen_ai.client.operation.duration"
METRIC_COST = "corl.cost"
METRIC_CALLS = "corl.expert.calls"
