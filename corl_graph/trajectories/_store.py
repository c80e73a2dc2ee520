"""Trajectory stores: append every run, read them back for training and reports.

Two backends behind one ``TrajectoryStore`` protocol, picked by ``open_store(url)``:

- JSON lines (``jsonl:///runs`` a folder, one file per UTC day; or ``runs.jsonl`` one file).
  Each record is written with ONE ``os.write`` on a descriptor opened with ``O_APPEND`` and
  under an exclusive ``flock``, so concurrent writers (threads, processes, router replicas on
  one host) never interleave lines.
- SQLite (``sqlite:///runs.db``, four slashes for an absolute path), in WAL mode with one
  ``BEGIN IMMEDIATE`` transaction per record, so readers never block writers.

Both keep the record schema of docs/trajectories.md: ``Trajectory.to_dict()`` plus
``schema_version``. ``append`` is async and fits ``Router(trajectory_sink=store.append)``.

>>> import asyncio, tempfile, os
>>> from corl_graph.trajectories import Trajectory
>>> store = open_store(os.path.join(tempfile.mkdtemp(), "runs.jsonl"))
>>> asyncio.run(store.append(Trajectory("2+2?", "low", "acme", "q1")))
>>> [t.query_id for t in store.iter(tier="low")]
['q1']
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio.to_thread

from corl_graph._exceptions import ConfigError, DataFormatError
from corl_graph.trajectories._record import Trajectory

__all__ = [
    "SCHEMA_VERSION",
    "JsonlTrajectoryStore",
    "SQLiteTrajectoryStore",
    "TrajectoryStore",
    "open_store",
]

SCHEMA_VERSION = 1
_ACCEPTED = (
    "jsonl:///relative/dir, jsonl:////absolute/dir, a path ending in .jsonl, "
    "sqlite:///relative/file.db, sqlite:////absolute/file.db"
)


@runtime_checkable
class TrajectoryStore(Protocol):
    """Somewhere runs are appended to and read back from, filtered by tier, tenant and time."""

    async def append(self, trajectory: Trajectory) -> None: ...

    def iter(
        self,
        *,
        tier: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> Iterator[Trajectory]: ...


def encode(trajectory: Trajectory) -> dict[str, Any]:
    """The stored record: the trajectory's fields plus ``schema_version``."""
    if not isinstance(trajectory, Trajectory):
        raise ConfigError(f"a store appends Trajectory objects, got {type(trajectory).__name__}")
    record = trajectory.to_dict()
    record["schema_version"] = SCHEMA_VERSION
    return record


def decode(record: dict[str, Any], where: str) -> Trajectory:
    version = record.pop("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise DataFormatError(f"{where}: schema_version {version} is not {SCHEMA_VERSION}")
    try:
        return Trajectory.from_dict(record)
    except (TypeError, KeyError) as exc:
        raise DataFormatError(f"{where}: not a trajectory record: {exc}") from exc


def _matches(
    t: Trajectory, tier: str | None, tenant: str | None, since: float | None, until: float | None
) -> bool:
    return (
        (tier is None or t.tier == tier)
        and (tenant is None or t.tenant == tenant)
        and (since is None or t.created_at >= since)
        and (until is None or t.created_at < until)
    )


class JsonlTrajectoryStore:
    """JSON-lines files: a folder (one ``YYYY-MM-DD.jsonl`` per UTC day) or a single file.

    A crash can leave a last line without its newline; readers skip that one torn line and
    fail loudly on any other line that is not a record.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.single_file = self.path.suffix == ".jsonl"
        target = self.path.parent if self.single_file else self.path
        target.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"JsonlTrajectoryStore({str(self.path)!r})"

    def _file_for(self, created_at: float) -> Path:
        if self.single_file:
            return self.path
        return self.path / (time.strftime("%Y-%m-%d", time.gmtime(created_at)) + ".jsonl")

    def append_sync(self, trajectory: Trajectory) -> None:
        line = (json.dumps(encode(trajectory), separators=(",", ":")) + "\n").encode("utf-8")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        fd = os.open(self._file_for(trajectory.created_at), flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(line)
            while view:  # os.write may write less than asked (signals); finish under the lock
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)  # closing releases the lock

    async def append(self, trajectory: Trajectory) -> None:
        await anyio.to_thread.run_sync(self.append_sync, trajectory)

    def files(self) -> list[Path]:
        if self.single_file:
            return [self.path] if self.path.exists() else []
        return sorted(self.path.glob("*.jsonl"))

    def iter(
        self,
        *,
        tier: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> Iterator[Trajectory]:
        """Records in append order (files by day), filtered; ``since``/``until`` are epoch s."""
        count = 0
        for file in self.files():
            if not self.single_file and since is not None:
                day_end = calendar.timegm(time.strptime(file.stem, "%Y-%m-%d")) + 86400
                if day_end <= since:  # the whole day is older than `since`
                    continue
            for t in _read_jsonl(file):
                if _matches(t, tier, tenant, since, until):
                    yield t
                    count += 1
                    if limit is not None and count >= limit:
                        return


def _read_jsonl(file: Path) -> Iterator[Trajectory]:
    with file.open("rb") as fh:
        data = fh.read()
    # What follows the last newline is empty, or a line a crash cut short: skipped.
    for i, raw in enumerate(data.split(b"\n")[:-1], 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as exc:
            raise DataFormatError(f"{file}:{i}: not JSON ({exc})") from exc
        yield decode(record, f"{file}:{i}")


class SQLiteTrajectoryStore:
    """One SQLite table (schema in docs/trajectories.md), WAL mode, one transaction a record.

    A connection is opened per operation, so the store can be shared across threads and
    processes; SQLite's locking and ``busy_timeout`` serialise the writers.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0):
        self.path = str(path) if str(path) == ":memory:" else str(Path(path).expanduser())
        if self.path == ":memory:":
            raise ConfigError("a trajectory store needs a file; sqlite:///:memory: would be lost")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"SQLiteTrajectoryStore({self.path!r})"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            yield conn
        finally:
            conn.close()

    def append_sync(self, trajectory: Trajectory) -> None:
        t = trajectory
        record = json.dumps(encode(t), separators=(",", ":"))
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO trajectories (trajectory_id, created_at, tier, tenant, query_id,"
                    " policy, cost_usd, answer, stop_reason, schema_version, record)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        t.trajectory_id,
                        t.created_at,
                        t.tier,
                        t.tenant,
                        t.query_id,
                        t.policy,
                        t.cost_usd,
                        t.answer,
                        t.stop_reason,
                        SCHEMA_VERSION,
                        record,
                    ),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def append(self, trajectory: Trajectory) -> None:
        await anyio.to_thread.run_sync(self.append_sync, trajectory)

    def iter(
        self,
        *,
        tier: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> Iterator[Trajectory]:
        """Records in insertion order, filtered in SQL."""
        where, params = [], []
        for clause, value in (
            ("tier = ?", tier),
            ("tenant = ?", tenant),
            ("created_at >= ?", since),
            ("created_at < ?", until),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = "SELECT seq, record FROM trajectories"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        for seq, record in rows:
            yield decode(json.loads(record), f"{self.path} row {seq}")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS trajectories (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    trajectory_id  TEXT NOT NULL UNIQUE,
    created_at     REAL NOT NULL,
    tier           TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    query_id       TEXT NOT NULL,
    policy         TEXT NOT NULL,
    cost_usd       REAL NOT NULL,
    answer         TEXT,
    stop_reason    TEXT,
    schema_version INTEGER NOT NULL,
    record         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trajectories_tier_time ON trajectories (tier, created_at);
CREATE INDEX IF NOT EXISTS trajectories_tenant_time ON trajectories (tenant, created_at);
CREATE INDEX IF NOT EXISTS trajectories_time ON trajectories (created_at);
"""


def open_store(url: str | Path) -> JsonlTrajectoryStore | SQLiteTrajectoryStore:
    """Open the store ``url`` names (paths follow SQLAlchemy: three slashes then a relative
    path, four for an absolute one). A bare path ending in ``.jsonl`` is a JSONL file.

    >>> open_store("sqlite:///:memory:")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    corl_graph._exceptions.ConfigError: a trajectory store needs a file; ...
    """
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        if text.endswith(".jsonl"):
            return JsonlTrajectoryStore(text)
        raise ConfigError(f"trajectory store {text!r} has no scheme; use one of: {_ACCEPTED}")
    if not rest.startswith("/") or rest == "/":
        raise ConfigError(
            f"store URL {text!r} needs a path after three slashes; use one of: {_ACCEPTED}"
        )
    path = rest[1:]
    scheme = scheme.lower()
    if scheme == "jsonl":
        return JsonlTrajectoryStore(path)
    if scheme == "sqlite":
        return SQLiteTrajectoryStore(path)
    raise ConfigError(f"unknown store URL scheme {scheme!r} in {text!r}; use one of: {_ACCEPTED}")
