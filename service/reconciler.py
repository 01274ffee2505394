"""The reconciler: polls only overdue tasks, through the same completion path as webhooks; turns
expired leases and passed adoption windows into the next state; expires jobs past their age.

Each round's cost follows the number of due jobs (indexed `next_check_at`, `lease_until`,
`created_at` of live jobs), never the number of jobs stored.
"""

from __future__ import annotations

import asyncio
import time

from service.backoff import Backoff
from service.changes import apply
from service.completion import apply_snapshot
from service.context import Services
from service.jobs import Change, JobRow, TaskRow
from service.states import Event, State
from service.upstream.errors import UpstreamError, UpstreamNotFound
from service.upstream.wire import TaskStatus
from service.wakeup import Topic
from service.worker_base import Worker

_NOT_FOUND_GIVE_UP = 5
"""Polls answered 404 before a job's task is taken as lost upstream."""


class Reconciler(Worker):
    name = "reconciler"
    topic = Topic.RECONCILE

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        s = services.settings
        self.poll_backoff = Backoff(s.poll_after_s, s.poll_backoff_max_s)
        self.slots = asyncio.Semaphore(s.reconcile_concurrency)

    @property
    def interval(self) -> float:
        return self.services.settings.reconcile_interval_s

    async def round(self) -> bool:
        s = self.services.settings
        now = time.time()
        store = self.services.store
        stale = await store.stale_leases(now=now, limit=s.reconcile_batch)
        aged = await store.aged_jobs(cutoff=now - s.max_age_s, limit=s.reconcile_batch)
        # Hold claimed polls long enough for the GET to finish before another replica may retry.
        due = await store.claim_due(now=now, limit=s.reconcile_batch, hold_s=2 * s.upstream_timeout_s)
        results = await asyncio.gather(
            *(self._expire_lease(j) for j in stale),
            *(self._expire(j) for j in aged),
            *(self._due(j) for j in due),
            return_exceptions=True,
        )
        for error in results:
            if isinstance(error, BaseException):
                self.log.error("reconcile_item_failed", error=repr(error), exc_info=error)
        return len(due) == s.reconcile_batch or len(stale) == s.reconcile_batch

    async def _write(self, job: JobRow, change: Change, *, when: State) -> None:
        def decide(current: JobRow | None, _task: TaskRow | None) -> Change | None:
            ok = current is not None and current.state is when and current.attempt == job.attempt
            return change if ok else None

        await apply(self.services, job.id, decide, source="reconciler")

    async def _expire_lease(self, job: JobRow) -> None:
        """A submitter died holding this job mid-create: its task may exist, so wait for adoption."""
        now = time.time()
        s = self.services.settings
        self.log.info("lease_expired", job_id=job.id, owner=job.lease_owner)
        change = Change(
            Event.LEASE_EXPIRED,
            "reconciler",
            set={
                "unknown_since": now,
                "next_check_at": now + s.adoption_window_s,
            },
        )
        await self._write(job, change, when=State.SUBMITTING)

    async def _expire(self, job: JobRow) -> None:
        self.log.info("job_expired", job_id=job.id, state=job.state.value)
        change = Change(
            Event.EXPIRE, "reconciler", set={"error_code": "expired", "error_message": "maximum age reached"}
        )
        await self._write(job, change, when=job.state)

    async def _due(self, job: JobRow) -> None:
        if job.state is State.UNKNOWN:
            await self._adoption_window_passed(job)
        elif job.state is State.SUBMITTED and job.task_id:
            async with self.slots:
                await self._poll(job, job.task_id)

    async def _adoption_window_passed(self, job: JobRow) -> None:
        """No sign of the ambiguous create's task in the window: send the job again (a new attempt)."""
        s = self.services.settings
        if job.attempt >= s.max_attempts:
            change = Change(
                Event.ATTEMPTS_EXHAUSTED,
                "reconciler",
                set={
                    "error_code": "attempts_exhausted",
                    "error_message": "no upstream task seen after ambiguous creates",
                },
            )
        else:
            change = Change(
                Event.ADOPTION_WINDOW_PASSED,
                "reconciler",
                set={
                    "attempt": job.attempt + 1,
                    "not_before": time.time(),
                },
                detail={"next_attempt": job.attempt + 1},
            )
        self.log.info("adoption_window_passed", job_id=job.id, attempt=job.attempt)
        await self._write(job, change, when=State.UNKNOWN)

    async def _poll(self, job: JobRow, task_id: str) -> None:
        attributes = {"segflow.job.id": job.id, "segflow.task.id": task_id, "segflow.attempt": job.attempt}
        with self.services.tracing.job_span("segflow.poll", job.trace_context, attributes):
            await self._poll_task(job, task_id)

    async def _poll_task(self, job: JobRow, task_id: str) -> None:
        log = self.log.bind(job_id=job.id, task_id=task_id)
        polls = self.services.metrics.polls
        try:
            snap = await self.services.upstream.get_task(task_id)
        except UpstreamNotFound:
            polls.labels(result="not_found").inc()
            log.warning("poll_task_not_found", polls=job.poll_count + 1)
            await self._write(job, self._not_found(job), when=State.SUBMITTED)
            return
        except UpstreamError as exc:
            polls.labels(result="error").inc()
            log.info("poll_failed", error_class=type(exc).__name__, error=str(exc))
            await self._write(job, self._reschedule(job), when=State.SUBMITTED)
            return
        polls.labels(result=snap.status.value).inc()
        reschedule = self._reschedule(job, staged=snap.status is TaskStatus.STAGED)

        def otherwise(current: JobRow | None, _task: TaskRow | None) -> Change | None:
            return reschedule if current is not None and current.state is State.SUBMITTED else None

        outcome = await apply_snapshot(self.services, job.id, snap, attempt=None, source="poll", otherwise=otherwise)
        if outcome.state_changed:
            log.info(
                "poll_applied",
                status=snap.raw_status,
                state=outcome.after.state.value if outcome.after else None,
            )

    def _reschedule(self, job: JobRow, *, staged: bool = False) -> Change:
        delay = self.poll_backoff.delay(job.poll_count + 1)
        if staged:  # waiting for a slot upstream: no sooner than the staged interval
            delay = max(delay, self.services.settings.staged_poll_after_s)
        return Change(None, "reconciler", set={"next_check_at": time.time() + delay, "poll_count": job.poll_count + 1})

    def _not_found(self, job: JobRow) -> Change:
        if job.poll_count + 1 < _NOT_FOUND_GIVE_UP:
            return self._reschedule(job)
        return Change(
            Event.FAILED_FINAL,
            "reconciler",
            set={"error_code": "task_lost", "error_message": "upstream no longer knows the task"},
        )
