"""Backoff policies: how long to wait before the next try of something."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with equal jitter (uniform in [delay/2, delay]), capped at `max_s`."""

    base_s: float
    max_s: float
    factor: float = 2.0

    def delay(self, tries: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after `tries` earlier failures (tries >= 0)."""
        raw = min(self.max_s, self.base_s * self.factor ** max(0, tries))
        r = (rng or random).random()
        return raw / 2 + r * raw / 2

    def ceiling(self, tries: int) -> float:
        """The largest delay `delay(tries)` can return."""
        return min(self.max_s, self.base_s * self.factor ** max(0, tries))
