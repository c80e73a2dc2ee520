"""schemathesis over the server's own OpenAPI document: generated requests (valid and not)
to every operation, checked for no 5xx and for responses that match the documented schema.

Bounded (``max_examples`` per operation, no deadline) so that it fits the default suite,
which .ci/run runs. Driven through Hypothesis directly: schemathesis 4.32's pytest plugin
(``from_fixture`` / ``parametrize``) does not run under pytest 9.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product
from typing import Any

import pytest
import schemathesis
from corl_graph.integrations import ServerConfig, ServerThread, create_app
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.generation import GenerationMode
from tool_fakes import generic, tool_router

from corl_graph.budget import InMemoryLedger

KEY = "sk-acme"
MAX_EXAMPLES = 25
# Every other default check runs (no 5xx, documented status codes, content types, response
# bodies and headers, refused malformed data, Allow on 405). Not this one: the document
# cannot state the rules that tie fields together (tool_choice needs tools, a tool message
# its tool_call_id, n is 1, a chat holds some text, the model names a tier), so schema-valid
# requests that break them are rightly answered 400 and this check would call that a bug.
EXCLUDED = [checks.positive_data_acceptance]


@pytest.fixture(scope="module")
def running() -> Iterator[ServerThread]:
    router, _ = tool_router(generic, ledger=InMemoryLedger())
    config = ServerConfig.parse(
        {"tenants": [{"name": "acme", "limit_usd": 1000.0, "api_keys": [KEY]}]}
    )
    server = ServerThread(create_app(config, router_config=router.config)).start()
    yield server
    server.stop()


@pytest.mark.slow  # about 20 s of CPU; .ci/run runs the whole suite, slow tests included
def test_every_operation_keeps_to_the_openapi_document(running: ServerThread) -> None:
    schema = schemathesis.openapi.from_url(running.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    names = sorted(f"{op.method.upper()} {op.path}" for op in operations)
    assert "POST /v1/chat/completions" in names and "GET /v1/models/{model_id}" in names
    checked: list[str] = []
    for operation, mode in product(operations, GenerationMode):

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                base_url=running.url,
                headers={"Authorization": f"Bearer {KEY}"},
                excluded_checks=EXCLUDED,
            )

        try:
            check()
        except Unsatisfiable:
            # An operation without inputs (GET /health) has nothing to make invalid.
            assert mode is GenerationMode.NEGATIVE, operation.path
            continue
        checked.append(f"{operation.method.upper()} {operation.path} {mode.value}")
    assert "POST /v1/chat/completions negative" in checked
    assert "POST /v1/chat/completions positive" in checked
