"""The server's OpenAPI document: request bodies, bearer auth and error responses.

FastAPI cannot see the chat request's body (the route reads raw bytes to bound and check them
before parsing), so the document is completed here: the request schema of
``/v1/chat/completions`` from the wire model, the bearer scheme on every ``/v1`` route, and
OpenAI's error object under each status a route can answer with.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ._openai_wire import ChatRequest

__all__ = ["server_openapi"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "string"},
                "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
        }
    },
}
_STATUSES = {
    "400": "invalid request (param names the field)",
    "401": "missing, unknown or revoked API key",
    "404": "no such model",
    "405": "method not allowed (see the Allow header)",
    "413": "request body too large",
    "429": "budget exhausted or rate limit reached",
    "500": "internal error",
    "502": "every expert failed",
    "503": "shutting down, or the ledger is unavailable",
    "504": "the query ran past its timeout",
}
_BY_ROUTE = {
    ("/v1/chat/completions", "post"): (
        "400",
        "401",
        "404",
        "405",
        "413",
        "429",
        "500",
        "502",
        "503",
        "504",
    ),
}
_GET_ERRORS = ("401", "404", "405", "429", "500", "503")


def server_openapi(app: FastAPI) -> dict[str, Any]:
    """The document for ``app`` (built once, then cached on the app as FastAPI does)."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    request = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(request.pop("$defs", {}))
    schemas["ChatCompletionRequest"] = request
    schemas["ErrorResponse"] = _ERROR
    components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            if not path.startswith("/v1/"):
                continue
            op["security"] = [{"bearerAuth": []}]
            if (path, method) == ("/v1/chat/completions", "post"):
                op["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}
                        }
                    },
                }
                op["responses"]["200"] = {
                    "description": "a chat.completion, or with "
                    "stream=true a text/event-stream of chunks"
                }
            responses = op.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's validation error: the server never sends it
            for status in _BY_ROUTE.get((path, method), _GET_ERRORS):
                responses.setdefault(
                    status,
                    {
                        "description": _STATUSES[status],
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorResponse"}
                            }
                        },
                    },
                )
    app.openapi_schema = spec
    return spec
