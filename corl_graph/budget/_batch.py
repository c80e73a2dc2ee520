"""Group commit for the SQLite ledger: one thread, one write transaction for a batch of operations.

A durable SQLite commit costs an fsync (milliseconds); a reserve or settle costs tens of
microseconds of SQL. So the thread takes every operation waiting in its queue, runs each in
its own SAVEPOINT inside one ``BEGIN IMMEDIATE`` transaction, and commits once. An operation
that raises rolls back to its savepoint only; the others commit. No caller hears "done" before
the COMMIT that contains its work has returned, so durability is the same as one commit each::

    queue: [reserve a][settle b][reserve c]  ──►  BEGIN IMMEDIATE
                                                   SAVEPOINT op; reserve a; RELEASE op
                                                   SAVEPOINT op; settle b;  ROLLBACK TO op (raised)
                                                   SAVEPOINT op; reserve c; RELEASE op
                                                   COMMIT  ──► resolve a, b (its error), c
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["CommitThread"]

# Bounds the time one write lock is held, so other processes on the file get their turn.
_MAX_BATCH = 128
_Item = tuple[Callable[[], Any], "Future[Any]"]


class CommitThread:
    """Owns a SQLite connection; runs submitted callables in batched write transactions."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        name: str,
        *,
        check: Callable[[], None] | None = None,
    ):
        self._conn = conn
        # Runs once a batch holds the write lock; raising fails the whole batch (fail closed).
        self._check = check
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        # A daemon thread: an interpreter exiting without aclose() is no worse than a crash,
        # which the ledger is built to survive.
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((fn, future))
        return future

    def close(self) -> Future[None]:
        """Finish queued work, close the connection; the future resolves when done."""
        done: Future[None] = Future()
        self._queue.put(None)
        threading.Thread(target=self._join, args=(done,), daemon=True).start()
        return done

    def _join(self, done: Future[None]) -> None:
        self._thread.join()
        done.set_result(None)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._run(batch)
            if stop:
                break
        self._conn.close()

    def _run(self, batch: list[_Item]) -> None:
        conn = self._conn
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            if self._check is not None:
                self._check()
            for fn, future in batch:
                if not future.set_running_or_notify_cancel():
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    result = fn()
                except sqlite3.Error:
                    raise  # storage trouble: abandon the whole batch below
                except Exception as exc:  # the caller's error (over budget, unknown id...)
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((future, result, None))
            conn.execute("COMMIT")
        except BaseException as exc:  # storage failed (or worse): fail the batch, keep the thread
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is gone; the next batch reports it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
