"""``corl-graph serve``: the OpenAI-compatible server from a JSON or TOML config file.

One process per replica by default; ``--workers N`` runs N uvicorn worker processes on one
socket, all charging the one ledger the config names (a SQLite file or PostgreSQL; an
in-memory ledger is refused, each worker would keep its own books). Rate limits must then
live in Redis (``rate_limit.redis_url``): per-process buckets would let N times the
configured rate through, so they are refused too. SIGTERM drains every worker as one process
does (in-flight requests finish, open holds are settled); SIGHUP re-reads the keys in every
worker. To scale past one machine, run replicas behind a load balancer with ``ledger_url``
pointing at one PostgreSQL database (see docs/integrations.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
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
        "--workers",
        type=int,
        default=1,
        help="worker processes on one socket and one ledger (SQLite file or PostgreSQL; "
        "rate limits, if any, in Redis); default 1",
    )
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
    check_workers(config, args.workers)
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

    if args.workers > 1:
        return _run_workers(config, args.config, args.workers)
    uvicorn.run(create_app(config, config_path=args.config), **_uvicorn_options(config))
    return 0


def _uvicorn_options(config: Any) -> dict[str, Any]:
    """uvicorn's settings for one process or for ``--workers``."""
    return {
        "host": config.host,
        "port": config.port,
        # uvicorn waits this long for open connections on SIGTERM; the app's own drain then
        # settles whatever is still reserved. uvicorn takes whole seconds.
        "timeout_graceful_shutdown": max(1, round(config.shutdown_grace_s)),
        # Keep idle connections longer than clients do (httpx and the openai SDK expire theirs
        # after 5 s, uvicorn's default too): equal timeouts race, and a client that reuses a
        # connection the server is closing gets a ReadError on a request never processed.
        "timeout_keep_alive": KEEP_ALIVE_S,
    }


KEEP_ALIVE_S = 30
_CONFIG_ENV = "CORL_GRAPH_SERVE_CONFIG"  # how --workers tells each worker its config file


def check_workers(config: Any, workers: int) -> None:
    """``--workers N`` needs books and limits every worker shares: one ledger outside the
    process, and rate limits in Redis when there are any. Raises ``ConfigError``."""
    if workers < 1:
        raise ConfigError(f"--workers must be 1 or more, got {workers}")
    if workers == 1:
        return
    from corl_graph.budget import ledger_in_process

    if ledger_in_process(config.ledger_url):
        raise ConfigError(
            f"--workers {workers} needs a ledger the workers share: ledger_url "
            f"{config.ledger_url!r} is in memory, each worker would keep its own books and "
            "a tenant could spend its limit once per worker; use sqlite:///path.db or "
            "postgresql://..."
        )
    if config.rate_limit is not None and not config.rate_limit.redis_url:
        raise ConfigError(
            f"--workers {workers} with rate_limit in each process would let {workers} times "
            f"the configured {config.rate_limit.requests_per_s} requests/s through per key; "
            "set rate_limit.redis_url (pip install 'corl-graph[redis]') so every worker "
            "draws on one bucket, or run one worker"
        )


def worker_app() -> Any:
    """The app of one ``--workers`` process (a uvicorn factory): the config file the parent
    checked, re-read here, with key reload on file change and on SIGHUP."""
    from corl_graph.integrations import ServerConfig, create_app

    path = os.environ[_CONFIG_ENV]
    return create_app(ServerConfig.load(path), config_path=path)


def _run_workers(config: Any, config_path: str, workers: int) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        # uvicorn restarts every worker on SIGHUP; here SIGHUP means "re-read the keys",
        # which each worker does itself without dropping a connection.
        def handle_hup(self) -> None:
            for process in self.processes:
                if process.pid is not None and process.exitcode is None:
                    os.kill(process.pid, signal.SIGHUP)

    os.environ[_CONFIG_ENV] = str(Path(config_path).resolve())
    uv_config = uvicorn.Config(
        "corl_graph.cli._serve:worker_app",
        factory=True,
        workers=workers,
        **_uvicorn_options(config),
    )
    Supervisor(uv_config, sockets=[uv_config.bind_socket()]).run()
    return 0


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
