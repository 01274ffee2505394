"""Account limits: create rate and concurrency per API key, and one account-wide credit."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from service.sandbox.wire import SandboxError


@dataclass
class TokenBucket:
    """`rate` tokens a second, holding at most `capacity` (at least one, so a slow rate still admits)."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, at: float) -> float | None:
        """Take one token; None on success, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (at - self.updated) * self.rate)
        self.updated = at
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


class AccountLimits:
    """Decides 429 and 402 for a create; the caller reports back when a task ends or is refunded."""

    def __init__(
        self,
        *,
        rate_per_s: float,
        concurrency: int,
        credit_usd: float | None,
        retry_after_busy_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._rate = rate_per_s
        self._concurrency = concurrency
        self._credit = credit_usd
        self._spent = 0.0
        self._busy_retry_after = retry_after_busy_s
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._active: Counter[str] = Counter()

    @property
    def credit_left_usd(self) -> float | None:
        return None if self._credit is None else max(0.0, self._credit - self._spent)

    @property
    def spent_usd(self) -> float:
        return self._spent

    def check_rate_and_concurrency(self, key: str, *, stage: bool = False) -> bool:
        """Raise SandboxError(429) over either limit; a token is spent only when both pass. With
        `stage`, a create over the concurrency limit is not refused: True says it must be staged."""
        over = bool(self._concurrency and self._active[key] >= self._concurrency)
        if over and not stage:
            raise SandboxError(429, "too many requests: concurrency limit reached", self._busy_retry_after)
        if self._rate:
            bucket = self._buckets.get(key)
            if bucket is None:
                capacity = max(1.0, self._rate)
                bucket = self._buckets[key] = TokenBucket(self._rate, capacity, capacity, self._clock())
            wait = bucket.take(self._clock())
            if wait is not None:
                raise SandboxError(429, "too many requests: rate limit reached", wait)
        return over

    def reserve(self, price_usd: float) -> None:
        """Hold the task's price against the credit; SandboxError(402) when it does not fit."""
        spent_out = self._credit is not None and self._credit - self._spent < 0.005  # under a cent: nothing runs
        if spent_out or (self._credit is not None and self._spent + price_usd > self._credit + 1e-9):
            raise SandboxError(402, "insufficient credit")
        self._spent += price_usd

    def refund(self, price_usd: float) -> None:
        self._spent = max(0.0, self._spent - price_usd)

    def has_slot(self, key: str) -> bool:
        """Whether one more task of `key` may run now (under the concurrency limit, if any)."""
        return not self._concurrency or self._active[key] < self._concurrency

    def task_started(self, key: str) -> None:
        self._active[key] += 1

    def task_ended(self, key: str) -> None:
        self._active[key] -= 1
        if self._active[key] <= 0:
            del self._active[key]


def retry_after_header(seconds: float) -> str:
    """Retry-After in whole seconds, never 0 (a 0 invites an immediate retry storm)."""
    return str(max(1, math.ceil(seconds)))
