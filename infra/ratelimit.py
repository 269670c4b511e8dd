"""Per-client token buckets, for the API and the relay: in-process, or shared by every replica
through Redis (`redis_url`).

A bucket holds up to `per_minute` tokens and refills at `per_minute / 60` a second; a request
takes one. `take` answers 0.0 when the request may go on, else the seconds until a token is
there (the `Retry-After`). Behind a load balancer, in-process buckets let each replica allow the
full rate; the Redis buckets make the limit hold across replicas. Redis is optional and never a
single point of failure: while it cannot be reached, each process falls back to its own buckets
(a limit that is per process again, never no limit) and tries Redis again after a pause.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from prometheus_client import Counter

# Loggers keep the "recchain." prefix that log filters and the docs use.
log = logging.getLogger("recchain.ratelimit")

BACKEND_ERRORS = Counter(
    "recchain_ratelimit_backend_errors_total",
    "Shared rate-limit lookups that failed (Redis unreachable or slow); the process used its"
    " own buckets instead.",
    ["service"],
)

# Atomic in Redis: refill by elapsed time on the server's clock (replicas' clocks may differ),
# take a token if there is one, and let an idle bucket expire once it would be full again.
# The wait is returned as a string because Redis truncates Lua numbers to integers.
_TAKE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or capacity
local ts = tonumber(b[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return tostring(wait)
"""


class Buckets(Protocol):
    async def take(self, client: str) -> float: ...

    async def aclose(self) -> None: ...


class LocalBuckets:
    """This process's buckets."""

    MAX_CLIENTS = 100_000

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(max(1, per_minute))
        self.buckets: dict[str, tuple[float, float]] = {}

    def take_now(self, client: str, now: float) -> float:
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= self.MAX_CLIENTS:
                self._prune(now)
            bucket = (self.capacity, now)
        tokens, last = bucket
        tokens = min(self.capacity, tokens + max(0.0, now - last) * self.rate)
        if tokens >= 1:
            self.buckets[client] = (tokens - 1, now)
            return 0.0
        self.buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate if self.rate else 60.0

    def _prune(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: forgetting it loses nothing.
        full_after = self.capacity / self.rate if self.rate else 60.0
        for key in [k for k, (_, last) in self.buckets.items() if now - last >= full_after]:
            del self.buckets[key]
        if len(self.buckets) >= self.MAX_CLIENTS:  # address churn faster than refill
            self.buckets.clear()

    async def take(self, client: str) -> float:
        return self.take_now(client, time.monotonic())

    async def aclose(self) -> None:
        return None


class RedisBuckets:
    """Buckets shared by every process that names the same Redis and `namespace`."""

    RETRY_AFTER_S = 5.0

    def __init__(
        self,
        url: str,
        per_minute: int,
        *,
        namespace: str,
        timeout_s: float = 0.25,
        errors: Counter = BACKEND_ERRORS,
    ) -> None:
        import redis.asyncio as redis

        self.client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.script = self.client.register_script(_TAKE)
        self.rate = per_minute / 60.0
        self.capacity = float(max(1, per_minute))
        self.prefix = f"recchain:ratelimit:{namespace}:"
        self.namespace = namespace
        self.local = LocalBuckets(per_minute)
        self.errors = errors.labels(namespace)
        self._down_until = 0.0

    async def take(self, client: str) -> float:
        now = time.monotonic()
        if now < self._down_until:
            return self.local.take_now(client, now)
        try:
            wait = await self.script(keys=[self.prefix + client], args=[self.rate, self.capacity])
        except Exception as exc:  # any Redis or network failure: degrade, do not fail requests
            self.errors.inc()
            # Logged at most once per pause: lookups skip Redis until it is over.
            log.warning(
                "shared rate limit unavailable, using per-process buckets",
                extra={"error": f"{type(exc).__name__}: {exc}", "service": self.namespace},
            )
            self._down_until = now + self.RETRY_AFTER_S
            return self.local.take_now(client, now)
        return float(wait)

    async def aclose(self) -> None:
        await self.client.aclose()


def make_buckets(
    per_minute: int,
    redis_url: str | None,
    *,
    namespace: str,
    errors: Counter = BACKEND_ERRORS,
) -> Buckets:
    """Shared buckets when `redis_url` is set, else this process's own. `errors` (labelled by
    service) counts failed Redis lookups, on the registry the service exports."""
    if redis_url:
        return RedisBuckets(redis_url, per_minute, namespace=namespace, errors=errors)
    return LocalBuckets(per_minute)
