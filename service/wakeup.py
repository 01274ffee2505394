"""Wake-ups between roles of one process: the API wakes the submitter, the completion path wakes
the fetcher. Workers still poll on an interval, so a lost wake-up only costs latency."""

from __future__ import annotations

import asyncio
import contextlib
import enum


class Topic(enum.StrEnum):
    SUBMIT = "submit"
    FETCH = "fetch"
    RECONCILE = "reconcile"
    DELIVER = "deliver"
    PRUNE = "prune"


class Wakeup:
    def __init__(self) -> None:
        self._events = {t: asyncio.Event() for t in Topic}

    def notify(self, topic: Topic) -> None:
        self._events[topic].set()

    async def wait(self, topic: Topic, timeout: float) -> None:
        """Return when `topic` is notified or `timeout` seconds pass, whichever comes first."""
        event = self._events[topic]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()
