"""Integrations: the router as a LangChain chat model and a LangGraph node, an
OpenAI-compatible HTTP server, and helpers for serving the controller with vLLM.

Imported as ``corl_graph.integrations``. The server needs the ``serve`` extra (FastAPI,
uvicorn); it is imported only when one of its names is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._chat_model import CORLChatModel, messages_to_query
from ._checkpoint import open_checkpointer, router_serde
from ._server_config import (
    OpenAIExpertConfig,
    PolicyConfig,
    ReplayExpertConfig,
    ServerConfig,
    TenantConfig,
    TierConfig,
)
from ._subgraph import router_node
from ._tracking import TrackingLedger
from ._vllm import (
    ControllerEndpointCheck,
    check_controller_endpoint,
    vllm_serve_command,
)

if TYPE_CHECKING:
    from ._server import create_app
    from ._server_thread import ServerThread

__all__ = [
    "CORLChatModel",
    "ControllerEndpointCheck",
    "OpenAIExpertConfig",
    "PolicyConfig",
    "ReplayExpertConfig",
    "ServerConfig",
    "ServerThread",
    "TenantConfig",
    "TierConfig",
    "TrackingLedger",
    "check_controller_endpoint",
    "create_app",
    "messages_to_query",
    "open_checkpointer",
    "router_node",
    "router_serde",
    "vllm_serve_command",
]

# Names whose modules import FastAPI / uvicorn: loaded on first use.
_LAZY = {
    "create_app": "corl_graph.integrations._server",
    "ServerThread": "corl_graph.integrations._server_thread",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'corl_graph.integrations' has no attribute {name!r}")
