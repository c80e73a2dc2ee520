"""The router as an OpenAI-compatible server, called with the official ``openai`` client.

Each API key belongs to one tenant with its own budget; the model name picks the tier
(``corl-low``, ``corl-medium``, ``corl-high``). In production the same configuration lives
in a TOML file served by ``corl-graph serve --config server.toml``.

    python examples/openai_server.py
"""

from __future__ import annotations

import sys

import openai
from corl_graph.integrations import ServerConfig, ServerThread, create_app
from langchain_core.language_models import FakeListChatModel

from corl_graph.budget import InMemoryLedger
from corl_graph.experts import ChatModelExpert, PriceSheet
from corl_graph.graph import RouterConfig
from corl_graph.policies import Cascade

CONFIG = {
    "tenants": [
        {"name": "acme", "limit_usd": 5.0, "period": "month", "api_keys": ["sk-acme-demo"]},
        {"name": "tiny", "limit_usd": 0.0, "api_keys": ["sk-tiny-demo"]},
    ],
    "ledger_url": "memory://",
    "shutdown_grace_s": 5,
}


def build_router_config() -> RouterConfig:
    small = ChatModelExpert(
        "small", FakeListChatModel(responses=["The answer is 4."]), PriceSheet(0.15, 0.6)
    )
    big = ChatModelExpert("big", FakeListChatModel(responses=["4"]), PriceSheet(2.5, 10.0))
    return RouterConfig(
        experts=[small, big], policy=Cascade(["small", "big"]), ledger=InMemoryLedger()
    )


def main(argv: list[str] | None = None) -> int:
    app = create_app(ServerConfig.parse(CONFIG), router_config=build_router_config())
    with ServerThread(app) as server:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-acme-demo") as client:
            print("models:", [m.id for m in client.models.list()])
            reply = client.chat.completions.create(
                model="corl-low", messages=[{"role": "user", "content": "What is 2 + 2?"}]
            )
            usage = reply.usage.model_extra if reply.usage else {}
            print("answer:", reply.choices[0].message.content, "cost: $", usage["cost_usd"])
            stream = client.chat.completions.create(
                model="corl-high",
                stream=True,
                messages=[{"role": "user", "content": "What is 2 + 2?"}],
            )
            print(
                "streamed:", "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            )
        with openai.OpenAI(
            base_url=server.url + "/v1", api_key="sk-tiny-demo", max_retries=0
        ) as broke:
            try:
                broke.chat.completions.create(
                    model="corl-low", messages=[{"role": "user", "content": "2 + 2?"}]
                )
            except openai.RateLimitError as exc:
                print("tenant 'tiny' is out of budget:", exc.status_code, exc.code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
