"""corl-graph serve exports the router's spans: from the config's tracing section or OTEL_*."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import openai
import pytest
from corl_graph.integrations import ServerConfig, ServerThread, create_app
from corl_graph.integrations._server_tracing import TracingConfig, server_tracer_provider
from tool_fakes import arithmetic, tool_router

from corl_graph._exceptions import ConfigError
from corl_graph.budget import InMemoryLedger

KEY = "sk-acme"


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        type(self).bodies.append(self.path.encode() + b" " + self.rfile.read(length))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    _Receiver.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Receiver.bodies
    server.shutdown()
    server.server_close()


def _serve_one_request(config: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    router, _ = tool_router(arithmetic, ledger=InMemoryLedger())
    server_config = ServerConfig.parse(
        {"tenants": [{"name": "acme", "limit_usd": 1.0, "api_keys": [KEY]}], **config}
    )
    running = ServerThread(create_app(server_config, router_config=router.config)).start()
    try:
        with openai.OpenAI(
            base_url=running.url + "/v1", api_key=KEY, max_retries=0, default_headers=headers
        ) as client:
            client.chat.completions.create(
                model="corl-high", messages=[{"role": "user", "content": "(2 + 3) * 4?"}]
            )
    finally:
        running.stop()  # drains, then flushes the batched spans


def test_the_tracing_section_exports_the_servers_spans(
    receiver: tuple[str, list[bytes]],
) -> None:
    url, bodies = receiver
    _serve_one_request(
        {"tracing": {"endpoint": url, "service_name": "router-eu"}},
        headers={"x-session-id": "chat-42"},
    )
    sent = b"".join(bodies)
    assert bodies and all(b.startswith(b"/v1/traces ") for b in bodies)
    for name in (
        b"router-eu",
        b"call_expert",
        b"gen_ai.usage.cost",
        b"llm.cost.total",
        b"user.id",
        b"acme",
        b"session.id",
        b"chat-42",
    ):
        assert name in sent


def test_otel_variables_are_honoured_without_a_section(
    receiver: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    _serve_one_request({})
    assert b"from-env" in b"".join(bodies)


def test_without_settings_nothing_is_exported_and_bad_sections_are_refused() -> None:
    assert server_tracer_provider(None, env={}) is None
    assert (
        server_tracer_provider(
            None, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}
        )
        is None
    )
    assert server_tracer_provider(TracingConfig(exporter="none")) is None
    with pytest.raises(ConfigError, match="tracing"):
        ServerConfig.parse(
            {
                "tenants": [{"name": "a", "limit_usd": 1, "api_keys": ["k"]}],
                "tracing": {"exporter": "zipkin"},
            }
        )
