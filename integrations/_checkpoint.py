"""Checkpointers for graphs that hold the router: SQLite by default, PostgreSQL for replicas.

LangGraph checkpoints the router's state (its calls, steps and transcript are dataclasses).
By default LangGraph's serializer loads any class a checkpoint names and logs a warning
for each; ``router_serde`` allows exactly the router's own types (plus LangChain's
messages and whatever the caller adds), so checkpoints load silently and nothing else can
be smuggled in through the checkpoint table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from corl_graph._exceptions import ConfigError
from corl_graph.policies import Turn
from corl_graph.protocol import Aggregate, Answer, CallExpert, ExpertCall, StepRecord, Think
from corl_graph.trajectories import Segment

__all__ = ["ROUTER_STATE_TYPES", "open_checkpointer", "router_serde"]

# Every class that can appear in RouterState; keep in step with corl_graph/graph/_state.py.
ROUTER_STATE_TYPES: tuple[type[Any], ...] = (
    Turn,
    StepRecord,
    ExpertCall,
    Segment,
    Think,
    CallExpert,
    Aggregate,
    Answer,
)

_ACCEPTED = "memory://, sqlite:///relative.db, sqlite:////absolute.db, postgresql://user@host/db"


def router_serde(extra_types: Iterable[type[Any]] = ()) -> JsonPlusSerializer:
    """A checkpoint serializer that loads the router's state types and ``extra_types`` only.

    >>> serde = router_serde()
    >>> from corl_graph.protocol import Answer
    >>> serde.loads_typed(serde.dumps_typed(Answer("4")))
    Answer(text='4', kind='answer')
    """
    allowed = [*ROUTER_STATE_TYPES, *extra_types]
    return JsonPlusSerializer(allowed_msgpack_modules=allowed)


@asynccontextmanager
async def open_checkpointer(
    url: str = "sqlite:///corl-checkpoints.db",
    *,
    extra_types: Iterable[type[Any]] = (),
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open a LangGraph checkpointer from a URL, the way ``open_ledger`` opens a ledger.

    ``sqlite:///`` needs langgraph-checkpoint-sqlite (the default, embedded);
    ``postgresql://`` needs langgraph-checkpoint-postgres (several replicas share it; its
    tables are created on first open). ``memory://`` keeps checkpoints in the process.

    >>> import asyncio
    >>> async def demo() -> str:
    ...     async with open_checkpointer("memory://") as saver:
    ...         return type(saver).__name__
    >>> asyncio.run(demo())
    'InMemorySaver'
    """
    serde = router_serde(extra_types)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(f"checkpointer URL {url!r} has no scheme; use one of: {_ACCEPTED}")
    if scheme == "memory":
        yield InMemorySaver(serde=serde)
    elif scheme == "sqlite":
        async with _sqlite(url, rest, serde) as saver:
            yield saver
    elif scheme in ("postgresql", "postgres"):
        async with _postgres("postgresql://" + rest, serde) as saver:
            yield saver
    else:
        raise ConfigError(f"unknown checkpointer URL scheme {scheme!r}; use one of: {_ACCEPTED}")


@asynccontextmanager
async def _sqlite(url: str, rest: str, serde: JsonPlusSerializer) -> AsyncIterator[Any]:
    try:
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    except ImportError as exc:
        raise ConfigError(
            "sqlite:// checkpointers need langgraph-checkpoint-sqlite: "
            "pip install 'corl-graph[serve]'"
        ) from exc
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(f"checkpointer URL {url!r} needs a path, e.g. sqlite:///checkpoints.db")
    path = rest[1:]
    if path != ":memory:":
        path = str(Path(path).expanduser())
    async with aiosqlite.connect(path) as conn:
        saver = AsyncSqliteSaver(conn, serde=serde)
        await saver.setup()
        yield saver


@asynccontextmanager
async def _postgres(conninfo: str, serde: JsonPlusSerializer) -> AsyncIterator[Any]:
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError as exc:
        raise ConfigError(
            "postgresql:// checkpointers need langgraph-checkpoint-postgres: "
            "pip install 'corl-graph[postgres]'"
        ) from exc
    async with AsyncPostgresSaver.from_conn_string(conninfo, serde=serde) as saver:
        await saver.setup()
        yield saver
