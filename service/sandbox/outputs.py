"""Output files (the masks) kept in memory until their retention ends, like the provider's temp storage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StoredOutput:
    data: bytes
    expires_at: float  # on the store's clock


class OutputStore:
    """Expiry is checked on every read, so a sweep that runs late never serves an expired file."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._files: dict[str, StoredOutput] = {}
        self.expired = 0

    def put(self, name: str, data: bytes, expires_at: float) -> None:
        self._files[name] = StoredOutput(data, expires_at)

    def get(self, name: str) -> bytes | None:
        stored = self._files.get(name)
        if stored is None:
            return None
        if stored.expires_at <= self._clock():
            del self._files[name]
            self.expired += 1
            return None
        return stored.data

    def delete(self, name: str) -> bool:
        return self._files.pop(name, None) is not None

    def sweep(self) -> int:
        """Forget every expired file; returns how many."""
        at = self._clock()
        expired = [name for name, stored in self._files.items() if stored.expires_at <= at]
        for name in expired:
            del self._files[name]
        self.expired += len(expired)
        return len(expired)

    def __len__(self) -> int:
        return len(self._files)
