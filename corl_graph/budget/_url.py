"""``open_ledger``: pick a ledger backend from a URL, the way the router's config names it."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from corl_graph._exceptions import ConfigError
from corl_graph.budget._ledger import Ledger
from corl_graph.budget._memory import InMemoryLedger
from corl_graph.budget._postgres import PostgresLedger
from corl_graph.budget._sqlite import SQLiteLedger
from corl_graph.budget._tiers import TenantBudget

__all__ = ["ledger_in_process", "open_ledger"]

_ACCEPTED = (
    "memory://, sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:///:memory:, "
    "postgresql://user@host:5432/db (or postgres://)"
)


def open_ledger(url: str, *, default_budget: TenantBudget | None = None, **options: Any) -> Ledger:
    """Open the ledger ``url`` names; ``options`` go to the backend's constructor.

    SQLite paths follow SQLAlchemy: three slashes then a relative path, four for an absolute
    one. A PostgreSQL URL is handed to libpq as is, so its query parameters (``sslmode``...)
    work; the connection opens on first use (or ``await ledger.connect()``).

    >>> open_ledger("memory://")  # doctest: +ELLIPSIS
    <corl_graph.budget._memory.InMemoryLedger object at ...>
    >>> open_ledger("sqlite:///:memory:")
    SQLiteLedger(':memory:')
    """
    scheme, sep, rest = _split(url)
    if not sep:
        raise ConfigError(f"ledger URL {url!r} has no scheme; use one of: {_ACCEPTED}")
    if scheme == "memory":
        return _build(InMemoryLedger, url, default_budget=default_budget, **options)
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"ledger URL {url!r} needs a path after three slashes, e.g. sqlite:///ledger.db"
            )
        path = rest[1:]
        if path != ":memory:":
            path = str(Path(path).expanduser())
        return _build(SQLiteLedger, url, path, default_budget=default_budget, **options)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        # libpq understands postgresql:// and postgres://; the +psycopg form is SQLAlchemy's.
        conninfo = "postgresql://" + rest
        return _build(PostgresLedger, url, conninfo, default_budget=default_budget, **options)
    raise ConfigError(f"unknown ledger URL scheme {scheme!r} in {url!r}; use one of: {_ACCEPTED}")


def ledger_in_process(url: str) -> bool:
    """Whether the ledger ``url`` names lives inside one process (``memory://``,
    ``sqlite:///:memory:``), so that two processes opening it would keep separate books.

    >>> ledger_in_process("sqlite:///:memory:"), ledger_in_process("sqlite:///ledger.db")
    (True, False)
    """
    scheme, _, rest = _split(url)
    return scheme == "memory" or (scheme == "sqlite" and rest == "/:memory:")


def _split(url: str) -> tuple[str, str, str]:
    scheme, sep, rest = url.partition("://")
    return scheme.lower(), sep, rest


def _build(cls: type[Any], url: str, *args: Any, **options: Any) -> Ledger:
    accepted = [
        name
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{cls.__name__} (from {url.split('://')[0]}://) does not take option(s) "
            f"{', '.join(unknown)}; it takes: {', '.join(accepted)}"
        )
    ledger: Ledger = cls(*args, **options)
    return ledger
