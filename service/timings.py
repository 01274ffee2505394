"""Schedules that follow what the upstream has been observed to do, read from the store so every
replica computes the same ones: when to poll a task first, and how long an ambiguous create's task
may still show itself (by a webhook) before the job is sent again when the history cannot say."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from service.settings import Settings
from service.store import Store

SAMPLES = 200
"""How many of the latest observations the figures are taken from."""
MIN_SAMPLES = 10
"""Fewer observations than this say too little: the settings' defaults apply."""
REFRESH_S = 10.0
"""How often a process reads the figures again (they move slowly; the read is two indexed queries)."""
FIRST_POLL_QUANTILE, FIRST_POLL_FACTOR = 0.9, 1.5
"""First poll at 1.5 x the p90 run time: by then nearly every webhook has come, so polls stay rare
when webhooks arrive, and a lost one is noticed a few seconds after the task ended."""
WINDOW_QUANTILE, WINDOW_FACTOR = 0.99, 2.0
"""Adoption window at 2 x the p99 create-to-final-webhook delay: a webhook later than that is rare."""


def quantile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile of `values` (not empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _within(value: float, floor: float, cap: float) -> float:
    return min(cap, max(floor, value))


@dataclass(frozen=True, slots=True)
class Schedule:
    first_poll_s: float
    adoption_window_s: float


def schedule(runs: Sequence[float], heard: Sequence[float], s: Settings) -> Schedule:
    """The schedule the observations call for, within the settings' floors and caps. Without
    enough observations the first poll comes at the floor (a cold start polls a little more, never
    waits the whole `poll_after_s`), and the adoption window is the cap (today's safe wait)."""
    floor = min(s.poll_floor_s, s.poll_after_s)
    first = floor
    if len(runs) >= MIN_SAMPLES:
        first = _within(quantile(runs, FIRST_POLL_QUANTILE) * FIRST_POLL_FACTOR, floor, s.poll_after_s)
    window = s.adoption_window_s
    if len(heard) >= MIN_SAMPLES:
        window = _within(quantile(heard, WINDOW_QUANTILE) * WINDOW_FACTOR, s.adoption_floor_s, s.adoption_window_s)
    return Schedule(first, window)


class Timings:
    """This process's copy of the schedule, refreshed from the store every `REFRESH_S`."""

    def __init__(self) -> None:
        self._current: Schedule | None = None
        self._read_at = -math.inf

    def current(self, s: Settings) -> Schedule:
        return self._current or schedule((), (), s)

    async def refresh(self, store: Store, s: Settings, now: float) -> Schedule:
        if self._current is None or now - self._read_at >= REFRESH_S:
            runs, heard = await store.recent_timings(limit=SAMPLES)
            self._current, self._read_at = schedule(runs, heard, s), now
        return self._current
