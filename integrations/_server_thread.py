"""ServerThread: run an ASGI app under uvicorn on a background thread (examples, tests,
notebooks). Production runs ``corl-graph serve`` instead."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

from corl_graph._exceptions import ConfigError

__all__ = ["ServerThread"]


class ServerThread:
    """Start ``app`` on a free loopback port; stopping it runs the app's graceful shutdown.

    >>> from fastapi import FastAPI
    >>> with ServerThread(FastAPI()) as server:
    ...     server.url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        graceful_timeout_s: float | None = None,
        start_timeout_s: float = 20.0,
    ):
        import uvicorn

        self.host = host
        self.port = port or _free_port(host)
        # uvicorn's hint says int, but it only ever awaits with this timeout: a float works.
        config = uvicorn.Config(
            app,
            host=host,
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_keep_alive=30,  # see cli/_serve.py
            timeout_graceful_shutdown=graceful_timeout_s,  # type: ignore[arg-type]
        )
        self.server = uvicorn.Server(config)
        self._start_timeout_s = start_timeout_s
        self._thread = threading.Thread(target=self.server.run, name="corl-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        if self._thread.is_alive():
            return self
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ask uvicorn to shut down (as SIGTERM does) and wait for the drain to finish."""
        self.server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
