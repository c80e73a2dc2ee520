"""Per-key request rate limits: a token bucket per API key, refilled continuously.

``RateLimiter`` keeps the buckets in the process (one limit per replica); ``RedisRateLimiter``
keeps them in Redis (one limit across every replica and worker that share it).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from corl_graph._exceptions import ConfigError

__all__ = ["RateLimiter", "RedisRateLimiter"]

log = logging.getLogger("corl_graph.server")


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


# One token bucket per key in a Redis hash, refilled and spent in one atomic script; the
# time is Redis's own, so replicas with skewed clocks still share one bucket.
_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisRateLimiter:
    """``RateLimiter``'s bucket kept in Redis, so that every replica and worker pointed at
    one Redis enforces one limit per key. Needs ``pip install 'corl-graph[redis]'``.

    Buckets are named ``<prefix><sha256 of the key>``; the key itself never reaches Redis.
    If Redis cannot be reached the request is let through (``take`` returns 0.0) with a
    warning in the log: the ledger still enforces every budget, and a rate limiter that
    takes the service down with it is worse than one that is briefly off.
    """

    def __init__(self, url: str, rate: float, burst: int, *, prefix: str = "corl:rate:"):
        try:
            import redis.asyncio
        except ImportError as exc:
            raise ConfigError(
                "rate_limit.redis_url needs the redis client: pip install 'corl-graph[redis]'"
            ) from exc
        self.rate = rate
        self.burst = burst
        self._prefix = prefix
        self._redis: Any = redis.asyncio.Redis.from_url(url, socket_timeout=1.0)
        self._script: Any = self._redis.register_script(_TAKE)
        self._url = url

    async def take(self, key: str) -> float:
        """Spend one token; 0.0 when allowed, else the seconds until a token is back."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        try:
            wait = await self._script(keys=[self._prefix + digest], args=[self.rate, self.burst])
        except Exception as exc:  # the redis client's errors share no public base we import
            log.warning(
                "rate limiter at Redis unavailable, request let through: %s", type(exc).__name__
            )
            return 0.0
        return float(wait)

    async def aclose(self) -> None:
        await self._redis.aclose()
