"""Reproducible random decisions.

Each decision is a hash of (seed, kind, key) rather than a draw from one shared RNG, so the outcome for
a given request does not depend on how concurrent requests interleave: the same seed and the same
requests give the same faults, latencies and failures in every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

_SCALE = float(1 << 64)


class Decider:
    """Maps (kind, key) to a fixed number in [0, 1) for one seed."""

    def __init__(self, seed: int) -> None:
        self._seed = seed

    def unit(self, kind: str, key: str) -> float:
        digest = hashlib.sha256(f"{self._seed}\x1f{kind}\x1f{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / _SCALE

    def chance(self, kind: str, key: str, probability: float) -> bool:
        """True with `probability`; 0 and 1 are exact so tests can force or forbid a fault."""
        if probability <= 0.0:
            return False
        if probability >= 1.0:
            return True
        return self.unit(kind, key) < probability

    def uniform(self, kind: str, key: str, low: float, high: float) -> float:
        return low + (high - low) * self.unit(kind, key)

    def choice(self, kind: str, key: str, options: Sequence[T]) -> T:
        return options[int(self.unit(kind, key) * len(options))]
