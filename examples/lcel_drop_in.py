"""An existing LCEL app, with its chat model swapped for the budget-aware router.

The only line that changes is the one that builds ``model``; the prompt, the parser and
the chain stay as they were. Offline: the experts are LangChain fake chat models here;
put ChatOpenAI / ChatAnthropic / a vLLM endpoint in their place.

    python examples/lcel_drop_in.py
"""

from __future__ import annotations

import asyncio
import sys

from corl_graph.integrations import CORLChatModel
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import Router, RouterConfig
from corl_graph.policies import Cascade


def build_router() -> Router:
    # Two experts: a cheap one and a strong one (prices in USD per million tokens).
    small = ChatModelExpert(
        "small",
        FakeListChatModel(responses=["The answer is 4."]),
        PriceSheet(0.15, 0.6),
        description="cheap, fine for arithmetic",
    )
    big = ChatModelExpert(
        "big",
        FakeListChatModel(responses=["2 + 2 = 4, so 4."]),
        PriceSheet(2.5, 10.0),
        description="strong, expensive",
    )
    return Router(RouterConfig(experts=[small, big], policy=Cascade(["small", "big"])))


async def main(argv: list[str] | None = None) -> int:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer with a number."), ("human", "{question}")]
    )
    # Before: model = ChatOpenAI(model="gpt-4o-mini")
    model = CORLChatModel(router=build_router())  # the one changed line
    chain = prompt | model | StrOutputParser()

    # Tier and tenant are per call, through the standard RunnableConfig.
    for tier in ("low", "high"):
        config = {"configurable": {"tier": tier, "tenant": "acme"}}
        answer = await chain.ainvoke({"question": "What is 2 + 2?"}, config)
        print(f"{tier:>4}: {answer}")

    # Without the parser the reply carries tokens and dollars.
    reply = await (prompt | model).ainvoke({"question": "What is 2 + 2?"})
    print("usage:", reply.usage_metadata, f"cost: ${reply.response_metadata['cost_usd']:.8f}")
    streamed = [c.content async for c in (prompt | model).astream({"question": "2 + 2?"})]
    print("streamed:", streamed)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
