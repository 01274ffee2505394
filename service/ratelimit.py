"""A token bucket: at most `rate` acquisitions per second on average, bursts up to `burst`."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else rate)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for one token; rate 0 means unlimited."""
        if self.rate <= 0:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)

    def pause(self, seconds: float) -> None:
        """Spend the bucket for `seconds` (the upstream said 429 with Retry-After)."""
        if self.rate > 0:
            self._tokens = min(self._tokens, -seconds * self.rate)


class KeyedLimiter:
    """Per-key buckets that never wait: `take(key)` is 0 when allowed, else seconds until it would
    be (for a 429's Retry-After). At most `per_minute` a minute per key on average, bursts of
    `burst`; 0 means unlimited. Held per process: with replicas each allows its own share."""

    def __init__(self, per_minute: float, burst: float | None = None) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, burst if burst is not None else per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, stamp)

    def take(self, key: str) -> float:
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, stamp = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - stamp) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate
