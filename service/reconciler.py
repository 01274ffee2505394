"""The reconciler: polls only overdue tasks, through the same completion path as webhooks; turns
expired leases into the next state (a claim never sent: queued again; a create in flight:
`unknown`); resolves `unknown` jobs by the upstream's task history (adopted through the completion
path, or sent again once the history says no task was made), falling back to the adoption window;
expires jobs past their age.

Each round's cost follows the number of due jobs (indexed `next_check_at`, `lease_until`,
`created_at` of live jobs), never the number of jobs stored. The first poll and the adoption window
follow the upstream's observed pace (service/timings.py).
"""

from __future__ import annotations

import asyncio
import time

from service.backoff import Backoff
from service.changes import apply
from service.completion import SnapshotRefused, apply_snapshot
from service.context import Services
from service.history import HistoryIncomplete, Lookup, conclusive_at, look_up
from service.jobs import Change, JobRow, TaskRow
from service.states import Event, State
from service.upstream.errors import UpstreamError, UpstreamNotFound
from service.upstream.wire import TaskSnapshot, TaskStatus
from service.wakeup import Topic
from service.worker_base import Worker

_NOT_FOUND_GIVE_UP = 5
"""Polls answered 404 before a job's task is taken as lost upstream."""
_HISTORY_RETRY_S = 10.0
"""After a failed history lookup, when to try the history again (within the adoption window)."""


class Reconciler(Worker):
    name = "reconciler"
    topic = Topic.RECONCILE

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.slots = asyncio.Semaphore(services.settings.reconcile_concurrency)

    @property
    def interval(self) -> float:
        return self.services.settings.reconcile_interval_s

    async def round(self) -> bool:
        s = self.services.settings
        now = time.time()
        store = self.services.store
        await self.services.timings.refresh(store, s, now)
        stale = await store.stale_leases(now=now, limit=s.reconcile_batch)
        aged = await store.aged_jobs(cutoff=now - s.max_age_s, limit=s.reconcile_batch)
        # Hold claimed polls long enough for the GET to finish before another replica may retry.
        due = await store.claim_due(now=now, limit=s.reconcile_batch, hold_s=2 * s.upstream_timeout_s)
        unknown = [j for j in due if j.state is State.UNKNOWN]
        results = await asyncio.gather(
            *(self._expire_lease(j) for j in stale),
            *(self._expire(j) for j in aged),
            *(self._due(j) for j in due if j.state is not State.UNKNOWN),
            self._resolve_unknown(unknown),
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
        """A submitter died holding this job (or its claim lapsed). A create never sent made no
        task: queued again at once. A create in flight may have: `unknown`, looked up at once in
        the history (the send lease outlasted the create's timeout), else after the adoption window."""
        now = time.time()
        s = self.services.settings
        self.log.info("lease_expired", job_id=job.id, owner=job.lease_owner, sent=job.sent_at is not None)

        def decide(current: JobRow | None, _task: TaskRow | None) -> Change | None:
            if current is None or current.state is not State.SUBMITTING or current.attempt != job.attempt:
                return None
            if current.lease_until is not None and current.lease_until >= now:
                return None  # renewed meanwhile: the create went out just now
            if current.sent_at is None:
                return Change(Event.CLAIM_LAPSED, "reconciler", set={"not_before": now})
            wait = 0.0 if s.history_lookup else self.services.timings.current(s).adoption_window_s
            return Change(
                Event.LEASE_EXPIRED,
                "reconciler",
                set={"unknown_since": now, "next_check_at": now + wait},
                detail={"sent_at": current.sent_at},
            )

        await apply(self.services, job.id, decide, source="reconciler")

    async def _expire(self, job: JobRow) -> None:
        self.log.info("job_expired", job_id=job.id, state=job.state.value)
        change = Change(
            Event.EXPIRE, "reconciler", set={"error_code": "expired", "error_message": "maximum age reached"}
        )
        await self._write(job, change, when=job.state)

    async def _due(self, job: JobRow) -> None:
        if job.state is State.SUBMITTED and job.task_id:
            async with self.slots:
                await self._poll(job, job.task_id)

    async def _resolve_unknown(self, jobs: list[JobRow]) -> None:
        """Ask the history about every due `unknown` job at once: adopt what it lists (through the
        completion path, as a webhook would), send again what it shows was never created; without
        the history, the adoption window decides."""
        if not jobs:
            return
        s = self.services.settings
        window = self.services.timings.current(s).adoption_window_s
        if not s.history_lookup:
            await asyncio.gather(*(self._adoption_window_passed(j, via="window") for j in jobs))
            return
        try:
            lookup = await look_up(self.services, jobs)
        except HistoryIncomplete as exc:
            self.log.warning("history_lookup_failed", jobs=len(jobs), error=str(exc))
            lookup = Lookup({}, complete=False)
        if not lookup.complete:
            self.log.info("history_incomplete", jobs=len(jobs), found=len(lookup.found))
        now = time.time()

        async def settle(job: JobRow) -> None:
            snap = lookup.found.get(job.id)
            if snap is not None:
                await self._adopt(job, snap)
            elif lookup.complete and now >= conclusive_at(job, s):
                await self._adoption_window_passed(job, via="history")
            elif lookup.complete:  # the history may not list the task yet: look again once it must
                later = {"next_check_at": conclusive_at(job, s)}
                await self._write(job, Change(None, "reconciler", set=later), when=State.UNKNOWN)
            elif now >= (deadline := (job.unknown_since or now) + window):
                await self._adoption_window_passed(job, via="window")  # the history cannot say
            else:
                retry = {"next_check_at": min(deadline, now + _HISTORY_RETRY_S)}
                await self._write(job, Change(None, "reconciler", set=retry), when=State.UNKNOWN)

        await asyncio.gather(*(settle(j) for j in jobs))

    async def _adopt(self, job: JobRow, snap: TaskSnapshot) -> None:
        try:
            outcome = await apply_snapshot(self.services, job.id, snap, attempt=job.attempt, source="history")
        except SnapshotRefused as exc:  # the listed task is another job's record: not this one's
            self.log.warning("history_task_refused", job_id=job.id, task_id=snap.task_id, error=str(exc))
            return
        self.log.info(
            "history_adopted",
            job_id=job.id,
            task_id=snap.task_id,
            status=snap.raw_status,
            state=outcome.after.state.value if outcome.after else None,
        )

    async def _adoption_window_passed(self, job: JobRow, *, via: str) -> None:
        """No sign of the ambiguous create's task (the history does not list it, or the adoption
        window passed without a webhook): send the job again (a new attempt)."""
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
                detail={"next_attempt": job.attempt + 1, "via": via},
            )
        self.log.info("adoption_window_passed", job_id=job.id, attempt=job.attempt, via=via)
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
        s = self.services.settings
        first = self.services.timings.current(s).first_poll_s
        delay = Backoff(first, s.poll_backoff_max_s).delay(job.poll_count + 1)
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
