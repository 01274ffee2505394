"""Spend accounting, pure: which totals a job's spend counts to, how a change of a job moves them,
and whether a reservation fits under the caps.

A job holds its estimate (`reserved_usd`) from before its create until the real price settles it
(the mask is stored) or the create is known not to have happened (refused, or queued again after a
429/5xx). Each total (a batch, a tenant's UTC day, a tenant's UTC month) is the sum of what jobs
reserved and what they settled at, moved only in the transaction that changes the job.
A reservation that is never settled (the task failed, or its fate is unknown) stays counted: the
upstream may have charged it, and a cap must never be passed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from service.jobs import JobRow
from service.pricing import price_usd

MAX_SIDE = 3072
WORST_CASE_USD = price_usd(MAX_SIDE * MAX_SIDE)
"""The most a valid image can cost: the estimate of a job whose size is not known."""
_EPS = 1e-9

Key = tuple[str, str]  # (scope, key) of the spend table


def keys(tenant: str, batch_id: str, at: float) -> tuple[Key, Key, Key]:
    """The totals spend made at `at` counts to: its batch, its tenant's UTC day and month."""
    t = time.gmtime(at)
    return (
        ("batch", batch_id),
        ("day", f"{tenant}:{time.strftime('%Y-%m-%d', t)}"),
        ("month", f"{tenant}:{time.strftime('%Y-%m', t)}"),
    )


def deltas(before: JobRow, after: JobRow, now: float) -> Iterator[tuple[Key, float]]:
    """How a change of one job moves the totals."""
    if after.reserved_usd is not None and after.reserved_at != before.reserved_at:
        # A new reservation. One the job held before stays counted: that attempt may have been paid.
        yield from ((k, after.reserved_usd) for k in keys(after.tenant, after.batch_id, after.reserved_at or now))
    elif before.reserved_usd is not None and after.reserved_usd is None:
        yield from ((k, -before.reserved_usd) for k in keys(before.tenant, before.batch_id, before.reserved_at or now))
    if after.price_usd is not None and before.price_usd is None:
        at = before.reserved_at or after.reserved_at or now
        yield from ((k, after.price_usd) for k in keys(after.tenant, after.batch_id, at))


@dataclass(frozen=True, slots=True)
class Caps:
    batch_usd: float | None
    daily_usd: float | None
    monthly_usd: float | None


def tightest(*caps: float | None) -> float | None:
    """The lowest of the caps that are set (None or 0 means no cap)."""
    set_ = [c for c in caps if c]
    return min(set_) if set_ else None


def refusal(caps: Caps, totals: dict[str, float], estimate: float) -> tuple[str, str] | None:
    """(scope, why) of the first cap reserving `estimate` on top of `totals` (by scope) would pass,
    or None if it fits."""
    for scope, cap, name in (
        ("batch", caps.batch_usd, "the batch's max_spend_usd"),
        ("day", caps.daily_usd, "the tenant's daily cap"),
        ("month", caps.monthly_usd, "the tenant's monthly cap"),
    ):
        if cap is not None and totals.get(scope, 0.0) + estimate > cap + _EPS:
            return scope, f"{name} of ${cap:g} is reached (${totals.get(scope, 0.0):.2f} spent or reserved)"
    return None


def estimate_of(width: int, height: int) -> float:
    return price_usd(width * height)
