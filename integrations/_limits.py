"""Per-key request rate limits: a token bucket per API key, refilled continuously."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """``rate`` requests a second per key on average, bursts of up to ``burst``.

    Buckets are keyed by a digest of the key, so the limiter never holds the key itself.

    >>> limiter = RateLimiter(rate=1.0, burst=2, clock=lambda: 0.0)
    >>> [limiter.take("k") for _ in range(3)]
    [0.0, 0.0, 1.0]
    """

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # digest -> (tokens, at)
        self._lock = threading.Lock()  # the app may be served from several threads

    def take(self, key: str) -> float:
        """Spend one token; 0.0 when allowed, else the seconds until a token is back."""
        digest = hashlib.sha256(key.encode()).digest()
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(digest, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[digest] = (tokens - 1.0, now)
                return 0.0
            self._buckets[digest] = (tokens, now)
            return (1.0 - tokens) / self.rate
