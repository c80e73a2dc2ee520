"""Sync entry points over the async nodes: one background event loop runs them all.

LangGraph's sync ``invoke`` / ``stream`` call a node's sync function. The nodes are async
(ledgers, experts and policies are), so their sync twins submit the coroutine to one event
loop kept on a daemon thread for the process: ledger connections and locks made by one sync
run stay on the loop that made them for the next. The caller's context (LangGraph's run
config and callbacks, the OpenTelemetry span) goes with each coroutine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["run_blocking", "sync_twin"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="corl-graph-sync", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the background loop, in a copy of the caller's context.

    Called from a coroutine on that loop itself it would deadlock: refused instead.
    """
    loop = _background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("run_blocking called from the corl-graph sync loop itself")
    context = contextvars.copy_context()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def start() -> None:
        task = loop.create_task(coro, context=context)

        def finish(t: asyncio.Task[T]) -> None:
            if t.cancelled():
                done.cancel()
            elif (exc := t.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result(t.result())

        task.add_done_callback(finish)

    loop.call_soon_threadsafe(start)
    return done.result()


def sync_twin(afunc: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """The blocking twin of an async node, with the same signature (LangGraph reads it to
    know which arguments, such as ``runtime``, to pass)."""

    def func(*args: Any, **kwargs: Any) -> T:
        async def run() -> T:
            return await afunc(*args, **kwargs)

        return run_blocking(run())

    func.__signature__ = _signature(afunc)  # type: ignore[attr-defined]
    func.__name__ = getattr(afunc, "__name__", "node")
    return func


def _signature(fn: Callable[..., Any]) -> Any:
    import inspect

    return inspect.signature(fn)
