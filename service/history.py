"""Did an ambiguous create make a task? Asked of the upstream's task history.

A job is `unknown` when its create was sent but no answer came (a lost response, a timeout, a
process killed mid-create). Its task, if any, was created while the create was on its way: between
`sent_at` and `sent_at + upstream_timeout_s`. One round looks up every due unknown job at once:
one history listing covering all their windows (paged, bounded), the rows segflow already knows
left out, each remaining row read once with GET /task/{id} (history rows carry no input or
webhook; the task body echoes `config.webhook_config.endpoint`, whose path names the job and the
attempt), matched to its job and attempt by that path (not the host: a changed `public_url` still
finds its tasks).

A job whose task is not listed once the history covers its window plus a settle delay (the
provider may list a task a moment after creating it) was not created: it can be sent again
without paying twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from service.context import Services
from service.jobs import JobRow
from service.settings import Settings
from service.upstream.client import MAX_PAGE_SIZE
from service.upstream.errors import UpstreamError
from service.upstream.wire import TASK_TYPE, HistoryRow, TaskSnapshot
from service.webhook_secrets import WEBHOOK_PREFIX, job_of_endpoint, parse_attempt, webhook_path

MAX_PAGES = 20
"""A listing longer than this many full pages is not read to the end: the lookup is treated as
unavailable for the round (bounded work; the adoption window still applies)."""


class HistoryIncomplete(Exception):
    """The history could not be read to the end of the window (an error, or too many rows)."""


def webhook_endpoint(settings: Settings, job_id: str, attempt: int) -> str:
    """The webhook URL a create of `job_id`'s `attempt` carries (and the history is matched on)."""
    return settings.public_url.rstrip("/") + webhook_path(job_id, attempt)


def attempt_of(endpoint: str | None) -> int | None:
    """The attempt an endpoint's path names (None for the older path without it)."""
    _, found, rest = (endpoint or "").partition(WEBHOOK_PREFIX)
    parts = rest.split("?", 1)[0].split("/")
    return parse_attempt(parts[1]) if found and len(parts) > 1 else None


def sent_at(job: JobRow) -> float:
    """When the job's ambiguous create went out (older rows: when it became unknown)."""
    return job.sent_at or job.unknown_since or job.updated_at


def conclusive_at(job: JobRow, s: Settings) -> float:
    """From this time on, a task of the create is listed if it exists."""
    return sent_at(job) + s.upstream_timeout_s + s.history_settle_s


@dataclass(frozen=True, slots=True)
class Lookup:
    found: dict[str, TaskSnapshot]  # job id -> the snapshot of the task its create made
    complete: bool  # every listed task was read: a job not found has no task in its window


async def look_up(services: Services, jobs: Sequence[JobRow]) -> Lookup:
    """What the history says of `jobs`' creates. Raises HistoryIncomplete when the listing itself
    cannot be read; a listed task that cannot be read (twice) leaves the lookup incomplete, so its
    silence proves nothing, while the tasks it did match are still adopted."""
    s = services.settings
    if not jobs:
        return Lookup({}, True)
    start = min(sent_at(j) for j in jobs) - s.history_settle_s
    end = max(conclusive_at(j, s) for j in jobs)
    rows: list[HistoryRow] = []
    try:
        for page in range(1, MAX_PAGES + 1):
            found = await services.upstream.list_tasks(start, end, page=page, page_size=MAX_PAGE_SIZE)
            rows.extend(found.tasks)
            if len(found.tasks) < MAX_PAGE_SIZE:
                break
        else:
            raise HistoryIncomplete(f"more than {MAX_PAGES * MAX_PAGE_SIZE} tasks in the window")
    except UpstreamError as exc:
        raise HistoryIncomplete(f"history unavailable: {type(exc).__name__}: {exc}") from None
    known = await services.store.known_task_ids([r.task_id for r in rows])
    unseen = [r.task_id for r in rows if r.task_id not in known and r.task_type.lower() in ("", TASK_TYPE)]
    wanted = {j.id: j.attempt for j in jobs}
    slots = asyncio.Semaphore(s.reconcile_concurrency)

    async def read(task_id: str) -> TaskSnapshot | None:
        for _ in range(2):  # one transient failure should not cost the whole lookup
            try:
                async with slots:
                    return await services.upstream.get_task(task_id)
            except UpstreamError:
                continue
        return None

    snaps = await asyncio.gather(*(read(t) for t in dict.fromkeys(unseen)))
    out: dict[str, TaskSnapshot] = {}
    for snap in snaps:
        if snap is None or not snap.webhook_endpoint:
            continue
        job_id = job_of_endpoint(snap.webhook_endpoint)
        attempt = attempt_of(snap.webhook_endpoint)
        if job_id not in wanted or (attempt is not None and attempt != wanted[job_id]):
            continue  # another job's task, or an earlier attempt's (its own webhooks tell of it)
        first = out.get(job_id)
        if first is None or _created(snap) < _created(first):
            out[job_id] = snap  # two tasks for one attempt (older endpoints carry no attempt): the older
    return Lookup(out, all(snap is not None for snap in snaps))


def _created(snap: TaskSnapshot) -> float:
    return snap.created_at.timestamp() if snap.created_at else 0.0
