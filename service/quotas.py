"""Per-tenant quotas: upload bytes per day, batch and replay requests per minute, unfinished jobs. Past one,
the request is refused with 429 and a `Retry-After` saying when the window frees up.

The counters live in the store (`tenant_usage`), so every replica counts against one limit: an
operator running three replicas gets the limit they configured, not three times it. Windows are
fixed (UTC day, clock minute), which is simple to explain and to check from a client's side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.api.errors import ApiError
from service.context import Services

DAY_S = 86_400.0
MINUTE_S = 60.0
OPEN_JOBS_RETRY_S = 60
"""Retry-After for the unfinished-jobs quota: it frees up as jobs finish, not at a known time."""


@dataclass(frozen=True, slots=True)
class Quota:
    name: str  # as the 429's detail names it
    counter: str  # the store's usage counter
    window_s: float
    refusal: str  # the 429's message, with {limit}


UPLOAD_BYTES = Quota(
    "upload_bytes_per_day", "upload_bytes", DAY_S, "this upload would pass the daily quota of {limit} bytes"
)
BATCH_REQUESTS = Quota("batches_per_minute", "batch_requests", MINUTE_S, "at most {limit} batch requests a minute")
REPLAY_REQUESTS = Quota("replays_per_minute", "replay_requests", MINUTE_S, "at most {limit} replay requests a minute")


def _refused(quota: str, limit: int, message: str, retry_after_s: float) -> ApiError:
    return ApiError(
        429,
        "quota_exceeded",
        message,
        [{"quota": quota, "limit": limit}],
        headers={"retry-after": str(max(1, math.ceil(retry_after_s)))},
    )


def _window(now: float, size: float) -> tuple[float, float]:
    """(start of the window holding `now`, seconds until it ends)."""
    start = now - now % size
    return start, start + size - now


async def upload_allowance(services: Services, tenant: str, now: float) -> int | None:
    """Bytes the tenant may still upload today (None: no quota); 429 when nothing is left."""
    limit = services.settings.quota_upload_bytes_per_day
    if not limit:
        return None
    start, left_s = _window(now, DAY_S)
    used = await services.store.add_usage(tenant, "upload_bytes", start, 0, limit)
    if used is None or used >= limit:
        raise _refused("upload_bytes_per_day", limit, f"daily upload quota of {limit} bytes used up", left_s)
    return limit - used


async def _charge(services: Services, tenant: str, quota: Quota, amount: int, limit: int, now: float) -> None:
    """Count `amount` against `quota` in the window holding `now`; 429 (nothing counted) past `limit`."""
    if not limit:
        return
    start, left_s = _window(now, quota.window_s)
    if await services.store.add_usage(tenant, quota.counter, start, amount, limit) is None:
        raise _refused(quota.name, limit, quota.refusal.format(limit=limit), left_s)


async def charge_upload(services: Services, tenant: str, nbytes: int, now: float) -> None:
    """Count an upload against today's quota; 429 (nothing counted) if it does not fit."""
    limit = services.settings.quota_upload_bytes_per_day
    await _charge(services, tenant, UPLOAD_BYTES, nbytes, limit, now)


async def charge_batch_request(services: Services, tenant: str, now: float) -> None:
    """Count a batch request against this minute's quota; 429 past it."""
    limit = services.settings.quota_batches_per_minute
    await _charge(services, tenant, BATCH_REQUESTS, 1, limit, now)


async def charge_replay(services: Services, tenant: str, now: float) -> None:
    """Count a callback replay request against this minute's quota ([callbacks] replays_per_minute); 429 past it."""
    limit = services.settings.callback_replays_per_minute
    await _charge(services, tenant, REPLAY_REQUESTS, 1, limit, now)


async def check_open_jobs(services: Services, tenant: str, adding: int) -> None:
    """429 if `adding` jobs would take the tenant's unfinished jobs past its quota.

    Two batches arriving at once on different replicas may both pass: the overshoot is bounded
    by one batch each (max_batch_items), which is why this is a count, not a reservation."""
    limit = services.settings.quota_queued_jobs
    if not limit:
        return
    open_now = await services.store.open_jobs(tenant)
    if open_now + adding > limit:
        raise _refused(
            "queued_jobs",
            limit,
            f"{open_now} jobs unfinished; {adding} more would pass the quota of {limit}",
            OPEN_JOBS_RETRY_S,
        )
