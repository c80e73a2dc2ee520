"""API keys that change without a restart: the server re-reads its config file's keys.

Revoking a leaked key is one edit of the config file (``revoked_api_keys``, or removing the
key); every replica that reads that file stops accepting the key within ``RELOAD_S`` seconds,
at its next request, or at once on SIGHUP. Only keys and revocations are taken from the new
file: a new tenant, budget or expert still needs a restart (their state lives in the router
and the ledger), and a key of a tenant this process does not serve is ignored, with a warning.
A file that no longer parses leaves the keys as they were, with an error in the log.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corl_graph._exceptions import CorlError

__all__ = ["RELOAD_S", "KeyFile"]

log = logging.getLogger("corl_graph.server")

# How often a request may look at the config file's modification time (one stat call).
RELOAD_S = 1.0


class KeyFile:
    """Watches ``path`` and calls ``apply(keys, revoked)`` when its keys change.

    ``keys`` is API key -> tenant, ``revoked`` the set of revoked keys, both as
    ``ServerConfig.api_keys()`` and ``revoked_keys()`` give them.
    """

    def __init__(
        self,
        path: str | Path,
        tenants: set[str],
        apply: Callable[[dict[str, str], set[str]], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path)
        self._tenants = tenants
        self._apply = apply
        self._clock = clock
        self._seen = self._stamp()
        self._checked = clock()
        self.reloads = 0

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def poke(self) -> None:
        """Re-read on the next ``check`` whatever the time (SIGHUP)."""
        self._checked = float("-inf")
        self._seen = None

    def check(self) -> None:
        """Re-read the keys if the file changed; at most once per ``RELOAD_S``."""
        now = self._clock()
        if now - self._checked < RELOAD_S:
            return
        self._checked = now
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return
        self._seen = stamp
        self.reload()

    def reload(self) -> None:
        from ._server_config import ServerConfig

        try:
            config: Any = ServerConfig.load(self.path)
            keys, revoked = config.api_keys(), config.revoked_keys()
        except CorlError as exc:
            log.error("config %s changed but its keys were not reloaded: %s", self.path, exc)
            return
        unknown = sorted({t for t in keys.values() if t not in self._tenants})
        if unknown:
            log.warning("keys of tenants %s ignored: new tenants need a restart", unknown)
        self._apply({k: t for k, t in keys.items() if t in self._tenants}, revoked)
        self.reloads += 1
        log.info(
            "API keys reloaded from %s (%d keys, %d revoked)", self.path, len(keys), len(revoked)
        )
