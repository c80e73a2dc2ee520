"""Spans reach a real OTLP receiver over HTTP and gRPC, with cost, one trace per query.

The receiver (otlp_receiver.py) is a separate process on loopback that decodes the wire
protobufs with opentelemetry-proto. Arize Phoenix is used too when ``CORL_PHOENIX_BIN`` names
a ``phoenix`` executable: it is not a test dependency because it is ~850 MB and its pytest
plugin breaks warnings-as-errors runs when installed next to the tests (docs/observability.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from corl_graph.integrations import ServerConfig, ServerThread, create_app
from opentelemetry.sdk.trace import TracerProvider
from tracing_helpers import make_router

from corl_graph.graph import RouteResult
from corl_graph.tracing import configure_tracing

pytestmark = pytest.mark.integration

_RECEIVER = Path(__file__).with_name("otlp_receiver.py")


class Receiver:
    def __init__(self, out: Path, ports: dict[str, int]):
        self.out, self.http_port, self.grpc_port = out, ports["http"], ports["grpc"]

    def spans(
        self, trace_ids: set[str], *, minimum: int, timeout_s: float = 20
    ) -> list[dict[str, Any]]:
        """The received spans of these traces, once at least ``minimum`` have arrived."""
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self.out.read_text(encoding="utf-8").splitlines() if self.out.exists() else []
            got = [s for s in map(json.loads, lines) if s["trace_id"] in trace_ids]
            if len(got) >= minimum or time.monotonic() > deadline:
                return got
            time.sleep(0.1)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    folder = tmp_path_factory.mktemp("otlp")
    ready, out = folder / "ports.json", folder / "spans.jsonl"
    command = [sys.executable, str(_RECEIVER), "--out", str(out), "--ready", str(ready)]
    proc = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"OTLP receiver did not start (exit code {proc.poll()})")
            time.sleep(0.05)
        yield Receiver(out, json.loads(ready.read_text()))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _route(provider: TracerProvider, n: int = 3) -> list[RouteResult]:
    router = make_router(provider)
    queries = (router.arun(f"What is {i}+2?", tenant="acme") for i in range(n))
    results = await asyncio.gather(*queries)
    assert provider.force_flush(10_000)
    return list(results)


def _check_traces(results: list[RouteResult], spans: list[dict[str, Any]]) -> None:
    for result in results:
        trace = [s for s in spans if s["trace_id"] == result.trace_id]
        roots = [s for s in trace if not s["parent_span_id"]]
        assert [r["name"] for r in roots] == ["invoke_agent corl_router"]
        ids = {s["span_id"] for s in trace}
        assert all(s["parent_span_id"] in ids for s in trace if s is not roots[0])
        chats = [s for s in trace if s["name"].startswith("chat ")]
        assert len(chats) == len(result.calls) == 2
        assert {c["kind"] for c in chats} == {"SPAN_KIND_CLIENT"}
        for chat in chats:
            a = chat["attributes"]
            assert a["gen_ai.operation.name"] == "chat"
            assert isinstance(a["gen_ai.usage.input_tokens"], int)  # int64 on the wire
            assert a["gen_ai.usage.cost"] == a["llm.cost.total"] > 0  # double on the wire
            assert a["corl.budget.tier"] == "low" and a["corl.tenant"] == "acme"
        total = sum(c["attributes"]["gen_ai.usage.cost"] for c in chats)
        assert total == pytest.approx(result.cost_usd)
        assert roots[0]["attributes"]["corl.cost.total_usd"] == pytest.approx(result.cost_usd)
        assert roots[0]["resource"]["service.name"] == "corl-graph"
        decisions = [e for s in trace for e in s["events"] if e["name"] == "corl.decision"]
        assert [e["attributes"]["corl.action"] for e in decisions].count("call") == 2


async def test_spans_arrive_over_otlp_http(receiver: Receiver) -> None:
    provider = configure_tracing(
        f"http://127.0.0.1:{receiver.http_port}",
        "http/protobuf",
        headers={"x-corl-test": "http"},
        set_global=False,
    )
    try:
        results = await _route(provider)
    finally:
        provider.shutdown()
    ids = {r.trace_id for r in results if r.trace_id}
    spans = receiver.spans(ids, minimum=3 * 7)
    assert {s["transport"] for s in spans} == {"http"}
    assert spans[0]["headers"]["x-corl-test"] == "http"
    _check_traces(results, spans)


async def test_spans_arrive_over_otlp_grpc_configured_by_env(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.grpc_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-corl-test=grpc")
    provider = configure_tracing(set_global=False)
    try:
        results = await _route(provider)
    finally:
        provider.shutdown()
    spans = receiver.spans({r.trace_id for r in results if r.trace_id}, minimum=3 * 7)
    assert {s["transport"] for s in spans} == {"grpc"}
    assert spans[0]["headers"]["x-corl-test"] == "grpc"
    _check_traces(results, spans)


# --- Arize Phoenix, when available -------------------------------------------------------


@pytest.fixture(scope="module")
def phoenix_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = os.environ.get("CORL_PHOENIX_BIN")
    if not binary:
        pytest.skip("set CORL_PHOENIX_BIN to a phoenix executable (own venv) to test Phoenix")
    port = 16006
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(tmp_path_factory.mktemp("phoenix")),
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": "14317",
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    proc = subprocess.Popen(
        [binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # about 60 s on a 2-core machine
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("Phoenix did not start")
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
async def test_spans_arrive_in_phoenix(phoenix_url: str) -> None:
    provider = configure_tracing(phoenix_url, set_global=False)
    try:
        results = await _route(provider, n=2)
    finally:
        provider.shutdown()
    ids = {r.trace_id for r in results}
    deadline, spans = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{phoenix_url}/v1/projects/default/spans?limit=200") as r:
            spans = [s for s in json.load(r)["data"] if s["context"]["trace_id"] in ids]
        if len(spans) >= 2 * 7:
            break
        time.sleep(0.5)
    chats = [s for s in spans if s["name"].startswith("chat ")]
    assert len(chats) == 4 and {s["span_kind"] for s in chats} == {"LLM"}
    for result in results:
        cost = sum(
            s["attributes"]["llm.cost.total"]
            for s in chats
            if s["context"]["trace_id"] == result.trace_id
        )
        assert cost == pytest.approx(result.cost_usd)


@pytest.mark.slow
def test_server_spans_arrive_in_phoenix(phoenix_url: str) -> None:
    """corl-graph serve's own spans, configured by its tracing section, reach Phoenix.

    Each request is one trace whose chat spans carry the cost the response reported, with the
    tenant as ``user.id`` and the caller's session header as ``session.id`` on the root.
    """
    config = ServerConfig.parse(
        {
            "tenants": [{"name": "acme", "limit_usd": 1.0, "api_keys": ["sk-acme"]}],
            "tracing": {
                "exporter": "phoenix",
                "endpoint": phoenix_url,
                "project_name": "corl-server",
            },
            "ledger_url": "memory://",
        }
    )
    router = make_router(None)
    running = ServerThread(create_app(config, router_config=router.config)).start()
    costs: list[float] = []
    try:
        with openai.OpenAI(
            base_url=running.url + "/v1",
            api_key="sk-acme",
            max_retries=0,
            default_headers={"x-session-id": "phoenix-check"},
        ) as client:
            for question in ("What is 2 + 2?", "What is 3 + 5?"):
                reply = client.chat.completions.create(
                    model="corl-low", messages=[{"role": "user", "content": question}]
                )
                assert reply.usage is not None
                costs.append(float((reply.usage.model_extra or {})["cost_usd"]))
    finally:
        running.stop()  # drains, then flushes the batched spans
    assert all(c > 0 for c in costs)
    url = f"{phoenix_url}/v1/projects/corl-server/spans?limit=500"
    deadline, spans, roots = time.monotonic() + 30, [], []
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url) as r:
                spans = json.load(r)["data"]
        except OSError:  # the project appears with its first span
            spans = []
        roots = [s for s in spans if s["parent_id"] is None]
        if len(roots) >= 2 and sum(s["name"].startswith("chat ") for s in spans) >= 2:
            break
        time.sleep(0.5)
    assert len(roots) == 2
    assert {r["attributes"]["user.id"] for r in roots} == {"acme"}
    assert {r["attributes"]["session.id"] for r in roots} == {"phoenix-check"}
    chats = [s for s in spans if s["name"].startswith("chat ")]
    per_trace = sorted(
        sum(
            s["attributes"]["llm.cost.total"]
            for s in chats
            if s["context"]["trace_id"] == r["context"]["trace_id"]
        )
        for r in roots
    )
    assert per_trace == pytest.approx(sorted(costs))
