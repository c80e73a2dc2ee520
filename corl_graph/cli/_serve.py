"""``corl-graph serve``: the OpenAI-compatible server from a JSON or TOML config file.

One process per replica; to scale out, run several replicas behind a load balancer with
``ledger_url`` pointing at one PostgreSQL database (see docs/integrations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from corl_graph._exceptions import ConfigError

__all__ = ["add_parser", "preflight", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve the router as an OpenAI-compatible API",
        description="Serve the router at /v1/chat/completions, one model per budget tier. "
        "Needs the serve extra: pip install 'corl-graph[serve]'.",
    )
    parser.add_argument("--config", required=True, help="server config file (.json or .toml)")
    parser.add_argument("--host", help="override the config's host")
    parser.add_argument("--port", type=int, help="override the config's port")
    parser.add_argument(
        "--check",
        action="store_true",
        help="run every check serve runs before it listens (keys, experts, "
        "policy, ledger reachable and writable), print the models and exit",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from corl_graph.integrations import ServerConfig

    config = ServerConfig.load(args.config)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        config = config.model_copy(update=overrides)
    summary = preflight(config)  # the same checks for --check and for serving
    if args.check:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigError(
            "corl-graph serve needs uvicorn: pip install 'corl-graph[serve]'"
        ) from exc
    from corl_graph.integrations import create_app

    # uvicorn waits this long for open connections on SIGTERM; the app's own drain then
    # settles whatever is still reserved.
    grace = max(1, round(config.shutdown_grace_s))  # uvicorn takes whole seconds
    # Keep idle connections longer than clients do (httpx and the openai SDK expire theirs
    # after 5 s, uvicorn's default too): equal timeouts race, and a client that reuses a
    # connection the server is closing gets a ReadError on a request never processed.
    uvicorn.run(
        create_app(config, config_path=args.config),
        host=config.host,
        port=config.port,
        timeout_graceful_shutdown=grace,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    return 0


KEEP_ALIVE_S = 30


def preflight(config: Any) -> dict[str, Any]:
    """Everything ``serve`` needs before it listens, checked the way ``serve`` uses it: the
    keys (environment variables read), the experts and policy built, and the ledger opened
    and written to (each tenant's budget set, as the server does when it starts), so an
    unreachable PostgreSQL, a wrong database or a read-only SQLite file is a clear error here
    rather than a traceback from uvicorn's start-up. ``serve --check`` runs exactly this.
    Raises ``ConfigError`` or ``LedgerError`` (the CLI prints them and exits with 2)."""
    from corl_graph.budget import TenantBudget

    config.api_keys()  # fails here when a key's environment variable is missing
    ledger = config.open_ledger()

    async def probe() -> None:
        try:
            connect = getattr(ledger, "connect", None)
            if connect is not None:
                await connect()
            for t in config.tenants:
                await ledger.set_tenant(TenantBudget(t.name, t.limit_usd, t.period))
        finally:
            await ledger.aclose()

    try:
        router_config = config.router_config(ledger)
    except BaseException:
        asyncio.run(ledger.aclose())
        raise
    asyncio.run(probe())
    return {
        "models": [f"{config.model_prefix}{tier}" for tier in router_config.tiers],
        "experts": [e.name for e in router_config.experts],
        "policy": router_config.policy.name,
        "tenants": [t.name for t in config.tenants],
        "ledger": config.ledger_url.split("://")[0],  # the URL may hold a password
    }
