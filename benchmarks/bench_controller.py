"""Controller call path: per-step client overhead against a loopback OpenAI-compatible server.

The server (uvicorn + a bare ASGI app, in a subprocess so it does not share our event loop or
GIL) answers every chat completion instantly with a fixed reply carrying vLLM-style
log-probs (``token_id:N``) and token ids. Compared, interleaved in rounds:

- ``langchain``: ``LLMPolicy`` over ``ChatOpenAI`` (the LangChain path),
- ``openai``: ``LLMPolicy`` over the same ``ChatOpenAI`` with ``transport="openai"`` (the
  model's own ``AsyncOpenAI`` client, no LangChain run manager),
- ``raw_openai``: ``AsyncOpenAI.chat.completions.create`` alone (floor for the SDK),
- ``raw_httpx``: one ``httpx.AsyncClient.post`` (floor for HTTP).

    python benchmarks/bench_controller.py [--calls 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic import SecretStr

from corl_graph.budget import BudgetTier
from corl_graph.policies import LLMPolicy, PolicyView
from corl_graph.protocol import ExpertDescriptor

RESULTS = Path(__file__).parent / "results" / "controller.json"

SERVER = r"""
import json, sys, uvicorn
REPLY = '<call expert="big">What is 17 * 23?</call>'
TOKENS = list(range(100, 112))
BODY = json.dumps({
    "id": "c", "object": "chat.completion", "created": 0, "model": "ctl",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": REPLY},
                 "logprobs": {"content": [{"token": f"token_id:{t}", "logprob": -0.1,
                                           "bytes": None, "top_logprobs": []} for t in TOKENS]},
                 "token_ids": TOKENS}],
    "prompt_token_ids": list(range(300)),
    "usage": {"prompt_tokens": 300, "completion_tokens": 12, "total_tokens": 312}}).encode()

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _view() -> PolicyView:
    experts = (ExpertDescriptor("small", 0.1, 0.4, "cheap"), ExpertDescriptor("big", 2.5, 10.0))
    return PolicyView(
        query="What is 17 * 23 + 4?",
        query_id="q",
        tier=BudgetTier("high", 0.05),
        tier_names=("low", "high"),
        experts=experts,
        transcript=(),
        steps=(),
        calls=(),
        spent_usd=0.0,
        remaining_usd=0.05,
        step=0,
        max_steps=8,
        budget_exhausted=False,
    )


async def _time(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(20):
        await fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t)
    return 1e3 * statistics.median(samples)


async def main(calls: int, rounds: int) -> dict[str, Any]:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=0.2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        chat = ChatOpenAI(model="ctl", base_url=base, api_key=SecretStr("x"), max_retries=0)
        via_lc = LLMPolicy(chat, transport="langchain")
        via_openai = LLMPolicy(chat, transport="openai")
        client = AsyncOpenAI(base_url=base, api_key="x", max_retries=0)
        raw = httpx.AsyncClient()
        view = _view()
        messages = [
            {"role": m.type if m.type != "human" else "user", "content": str(m.content)}
            for m in via_lc.messages(view)
        ]
        messages[0]["role"] = "system"
        body = {"model": "ctl", "messages": messages, "logprobs": True}

        async def lc() -> None:
            d = await via_lc.decide(view)
            assert d.segments[-1].token_ids and d.segments[-1].logprobs  # features kept

        async def oa() -> None:
            d = await via_openai.decide(view)
            assert d.segments[-1].token_ids and d.segments[-1].logprobs

        variants: dict[str, Callable[[], Awaitable[Any]]] = {
            "langchain": lc,
            "openai": oa,
            "raw_openai": lambda: client.chat.completions.create(
                model="ctl", messages=messages, logprobs=True
            ),  # type: ignore[arg-type]
            "raw_httpx": lambda: raw.post(f"{base}/chat/completions", json=body),
        }
        runs: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for name, fn in variants.items():
                runs[name].append(await _time(fn, calls))
        await raw.aclose()
    finally:
        server.terminate()
        server.wait(timeout=10)
    p50 = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "p50_ms_per_step": p50,
        "ratio_vs_raw_httpx": {k: v / p50["raw_httpx"] for k, v in p50.items()},
        "rounds_p50_ms": runs,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(main(args.calls, args.rounds))
    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"machine": machine(), "args": vars(args), **result}, indent=2) + "\n"
    )
    for k, v in result["p50_ms_per_step"].items():
        print(f"{k:<12} p50 {v:6.2f} ms/step  x{result['ratio_vs_raw_httpx'][k]:.2f} vs raw httpx")
