"""Routed queries traced to Arize Phoenix (or Langfuse, or any OTLP backend).

Every query is a span tree (query -> steps -> expert calls) carrying tokens and dollars:
Phoenix shows ``llm.cost.total``, Langfuse reads ``gen_ai.usage.cost``.

    phoenix serve &                      # UI and OTLP receiver on http://127.0.0.1:6006
    python examples/tracing_phoenix.py   # or: --endpoint http://collector:4318 --otlp

For Langfuse use ``corl_graph.tracing.langfuse(public_key, secret_key, host)`` instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from corl_graph.integrations import CORLChatModel
from langchain_core.language_models import FakeListChatModel
from opentelemetry.sdk.trace import TracerProvider

from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import Cascade
from corl_graph.tracing import configure_tracing, phoenix


def build_model(provider: TracerProvider) -> CORLChatModel:
    small = ChatModelExpert(
        "small", FakeListChatModel(responses=["The answer is 4."]), PriceSheet(0.15, 0.6)
    )
    big = ChatModelExpert("big", FakeListChatModel(responses=["4"]), PriceSheet(2.5, 10.0))
    config = RouterConfig(
        experts=[small, big], policy=Cascade(["small", "big"]), tracer_provider=provider
    )
    return CORLChatModel(router=Router(config))


async def main(argv: list[str] | None = None, provider: TracerProvider | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", default="http://127.0.0.1:6006")
    parser.add_argument("--otlp", action="store_true", help="a plain OTLP/HTTP endpoint")
    args = parser.parse_args(argv or [])
    if provider is None:
        provider = (
            configure_tracing(args.endpoint, set_global=False)
            if args.otlp
            else phoenix(args.endpoint, project_name="corl-graph", set_global=False)
        )
    model = build_model(provider)
    for tier in ("low", "high"):
        reply = await model.ainvoke("What is 2 + 2?", {"configurable": {"tier": tier}})
        print(
            f"{tier}: {reply.content}  trace {reply.response_metadata['trace_id']}"
            f"  ${reply.response_metadata['cost_usd']:.8f}"
        )
    provider.force_flush()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
